"""What crosses a process boundary: frames, jobs and outcomes, the protocol's ops, and the errors that travel with them."""
