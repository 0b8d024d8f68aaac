"""Which worker runs each job: the strategies and the balancer process that applies them."""
