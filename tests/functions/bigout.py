# Writes 3 MiB on stdout, more than the 1 MiB output limit, then exits normally.
import sys

chunk = "x" * 1023 + "\n"
for _ in range(3 * 1024):
    sys.stdout.write(chunk)
