"""The web dashboard: `GET /` and its static files, served by the gateway with no build step."""

import os

import bottle

STATIC = os.path.join(os.path.dirname(__file__), "static")


def install(app):
    """Add the dashboard's routes to the gateway's bottle app."""

    @app.get("/")
    def index():
        return bottle.static_file("index.html", root=STATIC)

    @app.get("/static/<path:path>")
    def static(path):
        return bottle.static_file(path, root=STATIC)
