"""Issue 20's first target through a real `minifaas up` (4 workers, RR): the rate of a node and a
PHP function against the Python function's (fresh calls), each a trivial hello, node and PHP
both as fresh calls (the default) and deployed with reuse=true (a resident interpreter per
function and worker), measured side by side and alternated (in order, then again in the reverse
order) so that the machine's drift favours none. Nothing about speed is asserted, only that
every request succeeded.
"""

import json

import keepalive
import pytest
from benchpaths import EXAMPLES
from figures import record
from support import started

CLIENTS = 16
SECONDS = 4.0
ROUNDS = 2
# A hello per language, each reading its input from stdin and printing it back.
NODE_HELLO = b'const s = require("fs").readFileSync(0, "utf8");\nconsole.log("Hello from node!\\n" + s);\n'
FUNCTIONS = {
    "python": ("greet", "python", (EXAMPLES / "greet.py").read_bytes()),
    "php": ("hellophp", "php", (EXAMPLES / "hello.php").read_bytes()),
    "node": ("hellojs", "js", NODE_HELLO),
    "php reuse": ("hellophp_reuse", "php", (EXAMPLES / "hello.php").read_bytes()),
    "node reuse": ("hellojs_reuse", "js", NODE_HELLO),
}
TARGET = 0.8    # node and PHP / Python
INPUT = json.dumps({"input": "test data"}).encode()


@pytest.fixture(scope="module")
def stack():
    stack = started(strategy="RR", workers=4)
    for name, lang, source in FUNCTIONS.values():
        keepalive.deploy(stack.url, name, lang, source, **({"reuse": "true"} if name.endswith("_reuse") else {}))
    yield stack
    stack.close()


def test_language_ratios(benchmark, stack):
    """node / Python and PHP / Python through the whole stack (target >= 0.8 each), fresh and reuse."""
    rates = {lang: [] for lang in FUNCTIONS}
    figures = {}

    def measure():
        for r in range(ROUNDS):
            order = list(FUNCTIONS) if r % 2 == 0 else list(reversed(FUNCTIONS))
            for lang in order:
                f = keepalive.run(stack.url, "/invoke?fn=" + FUNCTIONS[lang][0], INPUT, CLIENTS, SECONDS)
                assert f["errors"] == 0, f["first_error"]
                assert f["requests"] > 0
                rates[lang].append(f["rps"])
                figures[lang] = f

    benchmark.pedantic(measure, rounds=1, iterations=1)
    mean = {lang: sum(v) / len(v) for lang, v in rates.items()}
    section = "languages, 4 workers, %d keep-alive clients, %.0f s each, %d rounds alternated" % (CLIENTS, SECONDS, ROUNDS)
    for lang in FUNCTIONS:
        record(section, "%s hello through the stack" % lang, rps=round(mean[lang], 1),
               runs=[round(x, 1) for x in rates[lang]], p50_ms=figures[lang]["p50_ms"], p99_ms=figures[lang]["p99_ms"])
    others = [lang for lang in FUNCTIONS if lang != "python"]
    for lang in others:
        ratio = mean[lang] / mean["python"]
        record(section, "%s / Python (>= %s)" % (lang, TARGET), ratio=round(ratio, 3), met=ratio >= TARGET)
    benchmark.extra_info.update(rates=rates, ratios={lang: mean[lang] / mean["python"] for lang in others})
