"""The child side of a worker: the loop a forked worker runs, and the runtimes that run one job each."""
