"""Callbacks: an async call invoked with `X-Callback-Url: http://...` has its result POSTed there
once it is done: the JSON of GET /call/ID (without its "callback" field), Content-Type
application/json, header X-Call-Id. Any 2xx is delivered; anything else (another status, no
connection, no answer within `timeout_s`) is tried again after 0.5, 1, 2 s..., `attempts` tries
in all; then the callback is given up on. GET /call/ID shows where it stands:
"callback": {"url", "state": "pending" | "delivered" | "failed", "attempts", "error"?}.

Bounded: at most `max_pending` callbacks are owed at once (calls running or finished whose
callback is not yet delivered or given up on); past that, a new async call with a callback is
refused with 429 (and Retry-After) rather than accepted with a callback that might be dropped.
With a store, a callback owed when the gateway stops is sent by the next one (calls.Calls.recover).

Only http:// URLs, and redirects are not followed. The risk (SSRF): whoever may invoke may
make the gateway POST where it can reach. By default no callback goes to the gateway's own
machine or its link (loopback, link-local such as a cloud's metadata service at
169.254.169.254, unspecified, multicast and reserved addresses): the URL is refused with 400
when its host is such an address or resolves to one, and each attempt resolves the name again
and connects only to an address it checked (a name that changes its answer between the two
gets nowhere). The environment variable FAAS_CALLBACK_HOSTS (host names or addresses,
comma-separated; read when the gateway starts) restricts callbacks to those hosts, and the
hosts it names are trusted as they are, loopback included: set it on any gateway whose
invokers are not trusted with its network (private ranges such as 10.0.0.0/8 are allowed
without it).
"""

import heapq
import ipaddress
import itertools
import json
import logging
import os
import socket
import threading
import time
import urllib.parse

from reference.wire.errors import BadRequest, Overloaded

log = logging.getLogger(__name__)

SENDERS = 4
MAX_PENDING = 1000
ATTEMPTS = 4
FIRST_BACKOFF_S = 0.5
TIMEOUT_S = 10.0
MAX_URL_CHARS = 2048
HOSTS_ENV = "FAAS_CALLBACK_HOSTS"


def allowed_hosts_from_env(environ=None):
    value = (environ if environ is not None else os.environ).get(HOSTS_ENV, "")
    return tuple(h.strip().lower().strip("[]") for h in value.split(",") if h.strip())


def refused_address(address):
    """Why a callback may not go to IP `address` by default ("loopback", ...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])    # an IPv6 zone id is not part of it
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped                                 # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved"):
        if getattr(ip, "is_" + kind):
            return kind.replace("_", "-")
    return None


def _addresses(host, port):
    """The IP addresses `host` resolves to (itself when it is one), in the resolver's order."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _screened(host, port):
    """[(address, why it is refused or None)] for each address `host` resolves to now."""
    return [(address, refused_address(address)) for address in _addresses(host, port)]


class Callbacks:
    """Sends callbacks from `senders` threads (greenlets under gevent). Thread-safe."""

    def __init__(self, senders=SENDERS, max_pending=MAX_PENDING, attempts=ATTEMPTS,
                 first_backoff_s=FIRST_BACKOFF_S, timeout_s=TIMEOUT_S, allowed_hosts=None):
        self.max_pending, self.attempts = max_pending, attempts
        self.first_backoff_s, self.timeout_s = first_backoff_s, timeout_s
        self.allowed_hosts = allowed_hosts_from_env() if allowed_hosts is None else tuple(allowed_hosts)
        self._cond = threading.Condition()
        self._heap = []                  # (due, n, call, report)
        self._order = itertools.count()
        self._owed = 0
        self._stopping = False
        self._senders = [threading.Thread(target=self._send_loop, name="callback-%d" % i, daemon=True)
                         for i in range(senders)]
        for thread in self._senders:
            thread.start()

    def check_url(self, url):
        """`url` if it is one callbacks may go to; BadRequest saying why not."""
        if len(url) > MAX_URL_CHARS:
            raise BadRequest("X-Callback-Url is too long: at most %d characters" % MAX_URL_CHARS)
        if any(ord(c) <= 32 or ord(c) >= 127 for c in url):
            raise BadRequest("X-Callback-Url must be a plain http:// URL (no spaces, no control or "
                             "non-ASCII characters)")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BadRequest("X-Callback-Url must be an http:// URL with a host, got %r" % url)
        try:
            parts.port
        except ValueError:
            raise BadRequest("X-Callback-Url has an invalid port: %r" % url) from None
        if self.allowed_hosts and parts.hostname.lower() not in self.allowed_hosts:
            raise BadRequest("callbacks may go only to %s (%s), not to %s"
                             % (", ".join(self.allowed_hosts), HOSTS_ENV, parts.hostname))
        if not self.allowed_hosts:
            try:
                screened = _screened(parts.hostname, parts.port or 80)
            except OSError:
                screened = []       # not resolvable now: each attempt checks again
            for address, why in screened:
                if why:
                    what = address if address == parts.hostname else "%s (%s)" % (parts.hostname, address)
                    raise BadRequest("X-Callback-Url may not point at the gateway's own machine or link: %s is "
                                     "a %s address; name the host in %s to allow it" % (what, why, HOSTS_ENV))
        return url

    def _target(self, host, port):
        """The address an attempt connects to: `host` as it is when FAAS_CALLBACK_HOSTS names it,
        else the first address it resolves to now that is not refused (OSError if none is)."""
        if self.allowed_hosts:
            return host             # check_url let only those hosts in
        screened = _screened(host, port)
        for address, why in screened:
            if not why:
                return address
        raise OSError("callback refused: %s resolves to %s only (%s addresses are refused without %s)"
                      % (host, ", ".join(a for a, _ in screened), "/".join(sorted({w for _, w in screened})),
                         HOSTS_ENV))

    def reserve(self, force=False):
        """Hold room for one callback; Overloaded (429) when `max_pending` are owed (unless
        `force`: a callback already accepted, taken over after a restart)."""
        with self._cond:
            if self._owed >= self.max_pending and not force:
                raise Overloaded("too many callbacks waiting to be sent (%d); retry later" % self._owed,
                                 retry_after=1)
            self._owed += 1

    def release(self):
        with self._cond:
            self._owed -= 1

    def owed(self):
        with self._cond:
            return self._owed

    def deliver(self, call, report):
        """Send the finished `call`'s view to its callback URL (room was reserved); then
        report(call) with call.callback saying how it went."""
        self._schedule(0.0, call, report)

    def close(self):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- inside -------------------------------------------------------------------------------

    def _schedule(self, delay, call, report):
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), call, report))
            self._cond.notify()

    def _send_loop(self):
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, call, report = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            self._attempt(call, report)

    def _attempt(self, call, report):
        callback = call.callback
        callback["attempts"] += 1
        try:
            self._post(callback["url"], call)
        except Exception as exc:   # anything: the sender threads must live on
            callback["error"] = str(exc) or exc.__class__.__name__
            if callback["attempts"] < self.attempts:
                self._schedule(self.first_backoff_s * 2 ** (callback["attempts"] - 1), call, report)
                return
            callback["state"] = "failed"
            log.warning("callback of call %s to %s given up after %d attempts: %s",
                        call.call_id, callback["url"], callback["attempts"], callback["error"])
        else:
            callback.pop("error", None)
            callback.update(state="delivered", delivered=round(time.time(), 3))
        self.release()
        try:
            report(call)
        except Exception:
            log.exception("recording the callback of call %s", call.call_id)

    def _post(self, url, call):
        import http.client   # here: it imports ssl, which must come after gevent's patching

        view = call.view()
        view.pop("callback", None)
        body = json.dumps(view).encode()
        parts = urllib.parse.urlsplit(url)
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        port = parts.port or 80
        # Connected to the address checked, with the URL's own Host: a second lookup by
        # http.client could get another answer (DNS rebinding).
        conn = http.client.HTTPConnection(self._target(parts.hostname, port), port, timeout=self.timeout_s)
        try:
            conn.request("POST", path, body, {"Host": parts.netloc.rsplit("@", 1)[-1],
                                              "Content-Type": "application/json", "X-Call-Id": call.call_id,
                                              "User-Agent": "minifaas-callback"})
            answer = conn.getresponse()
            answer.read(64 * 1024)
        finally:
            conn.close()
        if not 200 <= answer.status < 300:
            raise RuntimeError("HTTP %d %s" % (answer.status, answer.reason))
