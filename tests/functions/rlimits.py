# A hostile function against its rlimits, the second line behind the cgroup: it prints them,
# opens descriptors until it is refused, and writes a file past the size limit.
import errno
import os
import resource

for name in ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_NPROC"):
    print(name, *resource.getrlimit(getattr(resource, name)))
fds = []
try:
    while len(fds) < 10_000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    print("descriptors never refused")
except OSError as exc:
    print("descriptors refused at", len(fds), errno.errorcode[exc.errno])
for fd in fds:
    os.close(fd)
chunk = b"\0" * (1 << 20)
try:
    with open("big", "wb", buffering=0) as f:
        for _ in range(80):
            f.write(chunk)
    print("wrote 80 MiB")
except OSError as exc:
    print("file stopped at", os.path.getsize("big") >> 20, "MiB", errno.errorcode[exc.errno])
