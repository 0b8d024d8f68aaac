# Over its memory_mb in children while the main process waits: three children of 60 MB each
# (180 MB under a 128 MiB limit), each one sleeping once it has its memory, the main process
# sleeping too. None of them ends by itself before a minute: the call must end when the limit
# is broken, not at its deadline.
import os
import time

for _ in range(3):
    if os.fork() == 0:
        block = bytearray(60 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(60)
        os._exit(0)
print("waiting", flush=True)
time.sleep(60)
