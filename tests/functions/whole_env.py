# Prints its environment as the process has it and as a program it starts gets it: the
# function's own variables and PATH, nothing the platform's start added.
import json
import os
import subprocess

child = subprocess.run(["/usr/bin/env"], capture_output=True, text=True).stdout.splitlines()
print(json.dumps({"process": sorted(os.environ), "child": sorted(line.split("=", 1)[0] for line in child)}))
