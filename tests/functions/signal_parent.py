# Signals its parent, which warm and sandboxed is its fork server, the init of the sandbox's pid
# namespace: interrupt, terminate, hang up, stop and kill it. Its own SIGINT first: it must get
# KeyboardInterrupt as under a plain python3 (the fork server lets go of its own handler).
import os
import signal
import time

try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except KeyboardInterrupt:
    print("interrupted")
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGSTOP, signal.SIGKILL):
    os.kill(os.getppid(), sig)
time.sleep(0.2)
print("still here")
