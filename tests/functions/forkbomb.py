# A fork storm: as many sleeping children as it can get, then report how many, and keep them.
import os
import sys
import time

marker = sys.stdin.read().strip() or "minifaas-hostile-marker"
made = 0
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 120; :", marker])
    made += 1
print(made, flush=True)
time.sleep(120)
