# A victim: writes its secret, stays a while (its output memfd open), then writes the end.
import sys
import time

sys.stdout.write("secret-of-the-victim\n")
sys.stdout.flush()
time.sleep(float(sys.stdin.read() or "3"))
print("end")
