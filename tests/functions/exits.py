# Ends the way scripts do: a non-daemon thread still running, an atexit handler, sys.exit(4).
import atexit
import sys
import threading
import time


def late():
    time.sleep(0.05)
    print("thread done", flush=True)


atexit.register(lambda: print("atexit ran"))
threading.Thread(target=late).start()
sys.exit(4)
