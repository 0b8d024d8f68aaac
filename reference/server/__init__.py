"""The server process (gateway connections, the balancer link, auto-scaling) and the supervisor of `minifaas up`."""
