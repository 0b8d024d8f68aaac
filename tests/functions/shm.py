# Fills /dev/shm and /tmp, after showing what earlier calls left there: they must find nothing.
import os

print("shm", sorted(os.listdir("/dev/shm")), "tmp", sorted(os.listdir("/tmp")))
for top in ("/dev/shm", "/tmp"):
    os.makedirs(top + "/keep/deep", exist_ok=True)
    with open(top + "/keep/deep/blob", "wb") as f:
        f.write(b"x" * (20 << 20))
    os.chmod(top + "/keep", 0o500)
