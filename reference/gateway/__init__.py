"""The HTTP gateway: the bottle app and its handlers, the client of the server, call records, metrics and the dashboard."""
