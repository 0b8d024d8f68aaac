# Waits the number of milliseconds given as input (default 100) without using the CPU: a
# function that spends its time on a remote call, where more workers do mean more throughput.
import sys
import time

text = sys.stdin.read().strip()
ms = float(text) if text else 100.0
time.sleep(ms / 1000.0)
print("waited %.0f ms" % ms)
