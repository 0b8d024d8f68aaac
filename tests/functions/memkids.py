# Four children holding 60 MB each: 240 MB in all under a 128 MiB limit. The limit holds for
# all of a call's processes together, so they cannot all get there.
import os
import sys
import time

r, w = os.pipe()
for _ in range(4):
    if os.fork() == 0:
        block = bytearray(60 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"k")
        time.sleep(30)
        os._exit(0)
os.close(w)
deadline, held = time.time() + 3, 0
while held < 4 and time.time() < deadline:
    if not os.read(r, 1):
        break
    held += 1
print("held", held)
sys.stdout.flush()
os._exit(0 if held == 4 else 1)
