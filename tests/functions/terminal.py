# An attacker after the operator's terminal: opens /dev/tty (the controlling terminal of its
# session, if any), which would let it type into the operator's shell (TIOCSTI) or read it,
# and says its process group (a warm call must lead its own: what the fork server kills after
# it). Prints what it found as JSON.
import json
import os

got = {"tty": None, "pid": os.getpid(), "pgid": os.getpgid(0)}
try:
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    got["tty"] = os.ttyname(fd)
    os.close(fd)
except OSError as exc:
    got["tty_error"] = exc.strerror
print(json.dumps(got))
