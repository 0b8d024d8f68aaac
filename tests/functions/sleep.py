# Sleeps for the seconds on stdin, then prints when it started and when it ended (time.time()):
# calls that must not overlap are checked by their intervals, whatever the machine's speed.
import json
import sys
import time

started = time.time()
time.sleep(float(sys.stdin.read() or "0.2"))
print(json.dumps({"start": started, "end": time.time()}))
