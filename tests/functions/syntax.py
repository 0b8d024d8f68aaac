# Does not compile: the call must report it as python3 would.
print("never"
