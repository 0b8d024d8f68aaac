# Tries to read /etc/shadow: must fail when the platform runs as root.
try:
    with open("/etc/shadow") as f:
        print("READ", len(f.read()), "bytes")
except OSError as exc:
    print("DENIED", type(exc).__name__)
