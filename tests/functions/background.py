# Starts a detached `sleep 30` in its own session and prints its pid: it must not outlive the call.
import subprocess

child = subprocess.Popen(["sleep", "30"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid)
