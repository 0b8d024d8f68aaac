"""The HTTP servers the gateway's WSGI app runs under."""
