# Counts its calls in a module global, a file in its directory and an attribute on a module the
# warm interpreter preloads: every call must start from nothing, so it prints "1 False False".
import json
import os

count = 0
count += 1
had_file = os.path.exists("state.txt")
with open("state.txt", "a") as f:
    f.write("x")
marked = hasattr(json, "minifaas_marker")
json.minifaas_marker = True
print(count, had_file, marked)
