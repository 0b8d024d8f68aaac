# Keeps 1 MiB blocks until memory runs out: for the memory limit.
blocks = []
while True:
    blocks.append(bytearray(1 << 20))
