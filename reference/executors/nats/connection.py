"""How the server and the worker hosts reach NATS: credentials, TLS, the refusal of a server
that lets anyone in, and the jobs stream's one configuration (whoever creates it first).

Credentials come from `--nats-creds FILE` or the environment (FAAS_NATS_USER and
FAAS_NATS_PASSWORD, or FAAS_NATS_TOKEN), never from a command line, where `ps` shows them.
FILE is either NATS's own `.creds` file (a user JWT and its nkey seed; needs the nkeys package)
or lines of the same three variables (`FAAS_NATS_USER=...`), readable by its owner only.
"""

import asyncio
import logging
import os
import ssl
import stat

from reference.wire.errors import FaasError

log = logging.getLogger(__name__)

STREAM = "FAAS_JOBS"
JOBS = "faas.jobs"
# Jobs older than this in the stream are stale: their caller has long been answered.
STREAM_MAX_AGE_S = 600
CONNECT_RETRY_S = 0.5
# While a JetStream cluster elects its leaders (every node just started, or too few of them up
# for a quorum) its API answers 503 or not at all: ask again this often, saying so once.
JETSTREAM_RETRY_S = 1.0
ENV_KEYS = ("FAAS_NATS_USER", "FAAS_NATS_PASSWORD", "FAAS_NATS_TOKEN")


class NatsRefused(FaasError):
    """A NATS connection this process must not use: no credentials, wrong ones, or a server
    that accepts anonymous clients. Not retried: an operator has to act."""


def servers(url):
    """The NATS URLs in `url`: one, or a cluster's as a comma-separated list."""
    return [u.strip() for u in url.split(",") if u.strip()]


def default_replicas(url):
    """The jobs stream's replicas when not given: one per URL listed, up to three. Hosts and
    server list the same URLs (docs/NATS.md), so both sides ask for the same stream."""
    return max(1, min(3, len(servers(url))))


def read_secrets(path):
    """The connect() keywords a `--nats-creds` file gives (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise NatsRefused("cannot read the NATS credentials file %s: %s" % (path, exc.strerror or exc)) from None
    if "BEGIN NATS USER JWT" in text:
        try:
            import nkeys  # noqa: F401 (nats-py signs the server's nonce with it)
        except ImportError:
            raise NatsRefused("%s is a NATS .creds file: it needs the nkeys package (pip install nkeys)" % path) from None
        return {"user_credentials": path}
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s holds NATS secrets and is readable by others: chmod 600 it", path)
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in ENV_KEYS:
            values[key.strip()] = value.strip().strip("'\"")
    found = _keywords(values)
    if not found:
        raise NatsRefused("%s: no NATS credentials in it (a .creds file, or FAAS_NATS_USER= and "
                          "FAAS_NATS_PASSWORD= lines, or FAAS_NATS_TOKEN=)" % path)
    return found


def _keywords(values):
    if values.get("FAAS_NATS_TOKEN"):
        return {"token": values["FAAS_NATS_TOKEN"]}
    if values.get("FAAS_NATS_USER"):
        return {"user": values["FAAS_NATS_USER"], "password": values.get("FAAS_NATS_PASSWORD", "")}
    return {}


def connect_options(settings):
    """nats.connect() keywords for `settings` (config.NatsSettings): credentials and TLS."""
    options = read_secrets(settings.creds) if settings.creds else _keywords(os.environ)
    urls = servers(settings.url)
    if settings.ca or any(u.startswith("tls://") for u in urls):
        context = ssl.create_default_context(cafile=settings.ca)
        options["tls"] = context
    return options


def anonymous_allowed(nc):
    """Whether the server nc is connected to lets clients in without credentials: its INFO
    says so (nats-py keeps it only as a private attribute)."""
    return not getattr(nc, "_server_info", {}).get("auth_required", False)


async def connect(settings, name, on_refused=None):
    """A NATS connection that reconnects forever; waits (and says so) until a server answers.
    Refuses (NatsRefused) wrong credentials and, unless settings.insecure, a server that lets
    anyone in; a node found so on a reconnect later makes it call `on_refused(why)`."""
    import nats
    import nats.errors

    options = connect_options(settings)
    if not options and not settings.insecure:
        raise NatsRefused("no NATS credentials: give --nats-creds FILE or FAAS_NATS_USER and "
                          "FAAS_NATS_PASSWORD (or FAAS_NATS_TOKEN) in the environment; "
                          "--nats-insecure to connect without (never on a shared network)")
    holder = {}
    fatal = asyncio.Event()   # an authorization or certificate failure: no point trying on

    async def error_cb(exc):
        if "authorization" in str(exc).lower():
            holder["refused"] = exc
            fatal.set()
        elif isinstance(exc, ssl.SSLError) or "certificate" in str(exc).lower():
            holder["tls"] = exc
            fatal.set()
        log.warning("NATS: %s", exc)

    async def disconnected_cb():
        log.warning("NATS: disconnected from %s", settings.url)

    async def reconnected_cb():
        nc = holder.get("nc")
        if nc is not None and anonymous_allowed(nc) and not settings.insecure:
            why = "NATS node %s accepts anonymous clients" % (nc.connected_url.netloc if nc.connected_url else "?")
            log.error("%s: refusing it (--nats-insecure allows it)", why)
            if on_refused is not None:
                on_refused(why)
            return
        log.info("NATS: reconnected to %s", settings.url)

    announced = False
    while True:
        holder.pop("refused", None)
        holder.pop("tls", None)
        fatal.clear()
        # One try per server: nats-py's own loop would never give up on an initial connect,
        # and after a failed TLS handshake it may not come back at all: an authorization or
        # certificate failure is seen through error_cb and not waited out.
        attempt = asyncio.ensure_future(nats.connect(
            servers=servers(settings.url), name=name, max_reconnect_attempts=1,
            reconnect_time_wait=CONNECT_RETRY_S, connect_timeout=2, allow_reconnect=True,
            error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb, **options))
        failed = asyncio.ensure_future(fatal.wait())
        try:
            await asyncio.wait([attempt, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        try:
            if not attempt.done():
                attempt.cancel()
                raise holder.get("refused") or holder.get("tls")
            nc = attempt.result()
        except Exception as exc:  # nats raises several kinds for "nothing listens there"
            refused = holder.get("refused") or (exc if "authorization" in str(exc).lower() else None)
            if refused is not None:
                raise NatsRefused("NATS at %s refused these credentials (%s)" % (settings.url, refused)) from None
            failed_tls = holder.get("tls") or (exc if isinstance(exc, ssl.SSLError) else None)
            if failed_tls is not None:   # a server we cannot verify is not one to wait for
                raise NatsRefused("TLS to NATS at %s failed (%s): give --nats-ca the CA that signed "
                                  "its certificate" % (settings.url, failed_tls)) from None
            if not announced:
                log.info("waiting for NATS at %s (%s)", settings.url, exc or type(exc).__name__)
                announced = True
            await asyncio.sleep(CONNECT_RETRY_S)
            continue
        holder["nc"] = nc
        nc.options["max_reconnect_attempts"] = -1   # connected once: from now on reconnect forever
        if anonymous_allowed(nc) and not settings.insecure:
            await nc.close()
            raise NatsRefused("NATS at %s accepts anonymous clients: anyone reaching it could read "
                              "and forge jobs. Configure its authorization (docs/NATS.md), or give "
                              "--nats-insecure to use it anyway" % settings.url)
        return nc


async def when_jetstream_answers(step, what):
    """await step() until JetStream answers it: a cluster without a leader (nodes starting,
    or no quorum) times out or says it is unavailable, and a process starting beside it should
    wait as it waits for NATS itself, not exit. Any other error is step()'s to raise."""
    import nats.errors
    import nats.js.errors

    announced = False
    while True:
        try:
            return await step()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError) as exc:
            if not announced:
                log.info("waiting for JetStream to answer (%s): %s", what, type(exc).__name__)
                announced = True
            await asyncio.sleep(JETSTREAM_RETRY_S)


def stream_config(replicas):
    """The one configuration of the jobs stream, whichever side creates it."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(name=STREAM, subjects=[JOBS + ".>"], retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE, max_age=STREAM_MAX_AGE_S, num_replicas=replicas)


async def ensure_stream(js, replicas):
    """Create the jobs stream, or check that the one there is configured as this side would
    create it. Never update it: changing a work queue's replicas under load (nats-server 2.9)
    left acknowledged jobs in it, replayed when its leader changed."""
    import nats.js.errors

    want = stream_config(replicas)
    try:
        info = await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(want)
            log.info("created the jobs stream %s (%d replicas)", STREAM, replicas)
            return
        except nats.js.errors.BadRequestError:   # the other side created it meanwhile
            info = await js.stream_info(STREAM)
    have = info.config
    differences = ["%s %s, not %s" % (field, getattr(have, field), getattr(want, field))
                   for field in ("retention", "num_replicas", "storage", "subjects")
                   if _norm(getattr(have, field)) != _norm(getattr(want, field))]
    if differences:
        raise NatsRefused("the jobs stream %s exists with %s: give the server and every host the same "
                          "--nats URLs (or --nats-replicas), or delete the stream while nothing runs"
                          % (STREAM, "; ".join(differences)))


def _norm(value):
    if isinstance(value, list):
        return sorted(value)
    if value is None:       # num_replicas left out means one
        return 1
    return getattr(value, "value", value)

