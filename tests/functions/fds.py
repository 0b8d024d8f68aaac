# Prints the descriptors it was started with: stdin, stdout and stderr, nothing else of the
# platform's (no pipe to bwrap, no cgroup file, no socket of the worker's).
import os

fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
seen = []
for fd in fds:
    try:
        seen.append("%d:%s" % (fd, os.readlink("/proc/self/fd/%d" % fd)))
    except OSError:
        pass        # the listing's own descriptor, closed by now
print("\n".join(seen))
