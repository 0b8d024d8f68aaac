# Leaves daemons behind: 20 double-forked, setsid sleepers and one busy loop, each named by the
# marker in its input; the call itself ends at once. None of them may outlive the call.
import os
import subprocess
import sys

marker = sys.stdin.read().strip() or "minifaas-hostile-marker"
for i in range(21):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            code = "while True: pass" if i == 0 else "import time; time.sleep(120)"
            os.execv(sys.executable, [sys.executable, "-c", code, marker])
        os._exit(0)
    os.wait()
# Zombies too: children that exit and are never waited for.
for _ in range(15):
    subprocess.Popen(["true"])
print("left daemons")
