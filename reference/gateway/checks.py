"""Who may ask the gateway what: the Host check (DNS rebinding), the Origin check (cross-site
writes) and the API and invoke keys, as plain functions over header values.

A browser page on another site can make a browser send requests to the gateway; it cannot
choose their Origin, Sec-Fetch-Site or Host headers. So a write whose Origin is another
origin is refused (403), and a request whose Host is not one of the gateway's own names is
refused (421): that is what a page served from an attacker's name that now resolves to the
gateway (DNS rebinding) sends. curl and scripts send no Origin, and the Host they were given.
"""

import hmac
import ipaddress
import socket

from reference.wire.errors import FaasError, Unauthorized

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a browser says of a request its own page made; "none" is the user typing the address.
SAME_ORIGIN_FETCH = ("same-origin", "none")


class Forbidden(FaasError):
    status, kind = 403, "forbidden"


class MisdirectedRequest(FaasError):
    status, kind = 421, "misdirected"


def split_host(value):
    """(host, port or None) of a Host header or an origin's authority, the host lowercased
    without a final dot, an IPv6 address kept in brackets; None when it is not of that form."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value.partition("]")
        host += bracket
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        host, colon, port = value.partition(":")
        port = port if colon else None
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    host = host[:-1] if host.endswith(".") else host
    if not host or any(c in host for c in " /\\@?#%\t"):
        return None
    return host, int(port) if port is not None else None


def _bracketed(host):
    """An IPv6 literal as a Host header writes it ("[::1]"); any other name as it is."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return "[%s]" % host
    except ValueError:
        pass
    return host


def is_own_address(host):
    """Whether `host` (a Host header's host part) is an IP address of this machine: the kernel
    lets a socket bind only to its own addresses. Asked at each request, so an address the
    machine got after the gateway started counts too."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def public_name(name):
    """A --public-name as a Host header's host part ("faas.example.com", "[2001:db8::1]");
    ValueError when it is not a host name or address (a port is not part of it)."""
    parsed = split_host(_bracketed(name.strip()))
    if parsed is None or parsed[1] is not None:
        raise ValueError("--public-name %r is not a host name or address (without a port)" % (name,))
    return parsed[0]


KNOWN_HOSTS_MAX = 64   # Host headers remembered as allowed (HostNames)


class HostNames:
    """The names a request's Host header may carry: the loopback names, the --host the gateway
    listens on, every --public-name; with a wildcard --host (0.0.0.0 or ::) also the machine's
    host name and its own addresses. Any port is accepted: behind a proxy it is the proxy's."""

    def __init__(self, host="127.0.0.1", public_names=()):
        self.wildcard = host in WILDCARD_HOSTS
        names = set(LOOPBACK_NAMES)
        if not self.wildcard:
            names.add(_bracketed(host).lower())
        else:
            names.update(n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n)
        names.update(public_name(name) for name in public_names)
        self.names = frozenset(names)
        # Host headers already found to carry one of `names` (fixed: the answer for them never
        # changes): nearly every request repeats one, and parsing it is a few per cent of the
        # gateway's CPU per call. Bounded; a header not in it is parsed as before.
        self._known = set()

    def allows(self, host_header):
        """Whether a request with this Host header (None: the request had none) is for us."""
        if host_header is None:
            return True     # HTTP/1.0 without Host: not a browser, nothing to rebind
        if host_header in self._known:
            return True
        parsed = split_host(host_header)
        if parsed is None:
            return False
        host = parsed[0]
        if host in self.names:
            if len(self._known) < KNOWN_HOSTS_MAX:
                self._known.add(host_header)
            return True
        return self.wildcard and is_own_address(host)

    def check(self, host_header):
        """MisdirectedRequest (421) unless the Host header names this gateway."""
        if not self.allows(host_header):
            # The names are not listed: a rebinding page can read this answer.
            raise MisdirectedRequest(
                "Host %r is not a name of this gateway (DNS rebinding is refused): use the address "
                "it listens on, localhost, or a name it was started with (--public-name NAME)"
                % (host_header[:100],))


def other_origin(origin, fetch_site, host_header):
    """Why a request comes from a page of another origin (a sentence), or None when it does not:
    its Origin is this gateway's own (the Host it was sent to), or it carries no Origin at all
    (curl, scripts). Sec-Fetch-Site other than same-origin is refused too: "same-site" is a
    page on another port or subdomain, another origin all the same."""
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_ORIGIN_FETCH:
        return "Sec-Fetch-Site: %s" % fetch_site.strip()
    if origin is None:
        return None
    scheme, sep, authority = origin.strip().partition("://")
    scheme = scheme.lower()
    own = split_host(host_header) if host_header is not None else None
    theirs = split_host(authority) if sep and scheme in DEFAULT_PORTS else None
    if own is None or theirs is None:
        return "Origin: %s" % origin   # "null" (a sandboxed page, a redirect) lands here
    default = DEFAULT_PORTS[scheme]
    if theirs[0] == own[0] and (theirs[1] or default) == (own[1] or default):
        return None
    return "Origin: %s" % origin


def check_same_origin(origin, fetch_site, host_header):
    """Forbidden (403) when a state-changing request comes from another origin's page."""
    reason = other_origin(origin, fetch_site, host_header)
    if reason is not None:
        raise Forbidden("refused: this request comes from a page of another origin (%s); deploy, "
                        "update and delete are taken from this gateway's own pages and from "
                        "clients that send no Origin (curl, scripts)" % reason)


def bearer_token(authorization):
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def key_matches(authorization, keys):
    """Whether the Authorization header carries one of `keys` (compared in constant time)."""
    token = bearer_token(authorization)
    if token is None:
        return False
    given = token.encode("utf-8", errors="surrogateescape")
    found = False
    for key in keys:   # no early exit: every key is compared
        found |= hmac.compare_digest(given, key.encode("utf-8", errors="surrogateescape"))
    return found


def check_key(authorization, keys, what):
    """Unauthorized (401) unless the header carries one of `keys`; no keys: anyone may."""
    keys = [k for k in keys if k]
    if keys and not key_matches(authorization, keys):
        raise Unauthorized("missing or wrong %s: send 'Authorization: Bearer KEY'" % what)
