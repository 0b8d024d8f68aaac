# Four children holding 60 MB each: 240 MB in all under a 128 MiB limit. The limit holds for
# all of a call's processes together: however many get their 60 MB (the OOM killer may take a
# child that already has it and let the next one through), never more than two are alive with
# it at once. The parent counts those still alive after they have all tried.
import os
import sys
import time

r, w = os.pipe()
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(60 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"k")
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
os.close(w)
deadline, held = time.time() + 3, 0
while held < 4 and time.time() < deadline:
    if not os.read(r, 1):
        break
    held += 1
alive = sum(1 for pid in kids if os.waitpid(pid, os.WNOHANG) == (0, 0))
print("held", held, "alive", alive)
sys.stdout.flush()
os._exit(0 if alive == 4 else 1)
