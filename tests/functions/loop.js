// Never ends: for the timeout.
for (;;) {}
