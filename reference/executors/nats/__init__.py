"""Worker hosts through NATS JetStream: the server-side executor, the host process, and the code cache."""
