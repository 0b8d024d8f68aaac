# Writes a little on both streams, then exits with status 3.
import sys

print("partial output")
print("something went wrong", file=sys.stderr)
sys.exit(3)
