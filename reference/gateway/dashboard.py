"""The web dashboard: `GET /` and its static files (reference/gateway/static/), served by the gateway
with no build step; the page's JavaScript reads the same JSON API as any other client."""

import os

import bottle

STATIC = os.path.join(os.path.dirname(__file__), "static")


def send(path, static_root=STATIC):
    answer = bottle.static_file(path, root=static_root)
    # Revalidate on every load: the files are tiny, and a stale script after an upgrade would
    # talk to the new API with old assumptions.
    answer.set_header("Cache-Control", "no-cache")
    return answer


def index():
    return send("index.html")


def static(path):
    return send(path)


def favicon():
    """Browsers ask for /favicon.ico on their own; an icon, not a 404 in every page's console."""
    return send("favicon.ico")
