"""How the platform is doing: GET /stats, /health, /languages and /metrics, from the server's
answers, the toolchains found and the gateway's own metrics."""

import functools

from bottle import response

from reference.gateway import metrics as metrics_mod
from reference.wire.errors import FaasError, Unavailable


@functools.lru_cache(maxsize=1)
def isolation():
    """The isolation functions run under on this machine ({"isolation": name, ...}), or {} when
    this build has no sandbox module. Found once: it does not change while the platform runs."""
    try:
        from reference.worker.sandbox.isolation import describe
    except ImportError:
        return {}
    info = describe()
    found = {"isolation": info["isolation"]}
    if info.get("missing"):
        found["isolation_missing"] = info["missing"]
    return found


class StatusRoutes:
    def __init__(self, client, metrics):
        self.client, self.metrics = client, metrics

    def stats(self):
        answer = {k: v for k, v in self.client.stats().items() if k != "req"}
        if answer.get("balancer") is False:
            raise Unavailable("balancer unavailable: the server cannot reach it", **answer)
        return dict(answer, ok=True)

    def health(self):
        """200 when the gateway, server, balancer and workers all answer; 503 naming what does not."""
        try:
            answer = {k: v for k, v in self.client.health().items() if k != "req"}
        except FaasError as exc:
            raise Unavailable("down: server (%s)" % exc,
                              **{**isolation(), "gateway": True, "server": False, "down": ["server"]}) from None
        answer = {**isolation(), **answer, "gateway": True}
        down = [part for part in ("server", "balancer", "workers") if not answer.get(part)]
        if down:
            raise Unavailable("down: %s" % ", ".join(down), **dict(answer, down=down))
        return dict(answer, ok=True)

    def languages(self):
        from reference.functions import toolchains
        return {"ok": True, "languages": toolchains.report()}

    def metrics_page(self):
        response.content_type = metrics_mod.CONTENT_TYPE
        return self.metrics.exposition()
