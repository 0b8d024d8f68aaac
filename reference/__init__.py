"""Mini FaaS: a small Function-as-a-Service platform to read and to measure.

The processes are the gateway (HTTP), the server (pre-forked workers), the balancer
(scheduling strategies) and the workers; see docs/ARCHITECTURE.md for the picture.
"""

__version__ = "0.1.0"
