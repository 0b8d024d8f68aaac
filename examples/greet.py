# Greets the name given as input.
import sys

name = sys.stdin.read().strip() or "world"
print(f"Hello, {name}!")
