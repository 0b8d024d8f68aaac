# Tries to read the file whose path is its input: another function's code must be out of reach.
import sys

path = sys.stdin.read().strip()
try:
    with open(path, "rb") as f:
        print("READ", len(f.read()), "bytes")
except OSError as exc:
    print("DENIED", type(exc).__name__)
