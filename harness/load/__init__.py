"""What sends the load: the injector, the pool watcher and the trace readers."""
