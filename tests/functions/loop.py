# Never ends: for the timeout.
while True:
    pass
