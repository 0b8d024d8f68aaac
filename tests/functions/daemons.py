# Leaves daemons behind: 20 double-forked, setsid sleepers, one busy loop, and one sleeper that
# hides in its parent's process group (a warm call's fork server's: a call shares its session),
# each named by the marker in its input; the call itself ends at once. None of them may outlive
# the call.
import os
import subprocess
import sys

marker = sys.stdin.read().strip() or "minifaas-hostile-marker"
parents_group = os.getpgid(os.getppid())


def hide(i):
    """Leave the call's process group: for the last, into the parent's if the kernel lets it."""
    if i == 21:
        try:
            return os.setpgid(0, parents_group)
        except OSError:
            pass
    os.setsid()


for i in range(22):
    if os.fork() == 0:
        hide(i)
        if os.fork() == 0:
            code = "while True: pass" if i == 0 else "import time; time.sleep(120)"
            os.execv(sys.executable, [sys.executable, "-c", code, marker])
        os._exit(0)
    os.wait()
# Zombies too: children that exit and are never waited for.
for _ in range(15):
    subprocess.Popen(["true"])
print("left daemons")
