"""Executors run jobs on workers for the server: `local` (pre-forked processes on pipes) and
`nats` (worker hosts through NATS JetStream). `Executor` is the seam the server uses."""
