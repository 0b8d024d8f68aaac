"""Reading a request's parts within the contract's limits: the body, query parameters,
per-function limits, an invocation's input, a function's env and secrets, and the JSON forms
of deploy and update. Every refusal is a FaasError (400 or 413) with a sentence saying what to
send instead."""

import json
import re

import orjson
from bottle import request

from reference.wire.errors import BadRequest, PayloadTooLarge

DEPLOY_USAGE = ("send the source as the body of POST /deploy?name=N&lang=L, "
                "or a JSON object {\"name\", \"lang\", \"code\"}")
NAME_MISSING = ("the function's name is missing: POST /deploy?name=N&lang=L with the source as the body "
                "(N: a letter or digit, then up to 63 letters, digits, _ or -), or a JSON object "
                "{\"name\", \"lang\", \"code\"} with Content-Type: application/json")
UPDATE_USAGE = ("send the source as the body of PUT /function/NAME[?lang=L], "
                "or a JSON object {\"code\", \"lang\"}")

# A function's configuration: env (shown by the API) and secrets (never shown), together.
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")     # a POSIX name, at most 128 characters
MAX_VARIABLES = 64              # env and secrets together
MAX_VALUE_BYTES = 16 * 1024     # one value
MAX_CONFIG_BYTES = 64 * 1024    # every name and value together
# Names the platform sets or that change how a process starts before the function's own code
# runs: the worker's PATH, the dynamic loader's and libc's, the interpreters' own, ours; PWD,
# which names the call's directory (bwrap sets it, whatever the function asked for).
RESERVED_NAMES = frozenset(("PATH", "PWD", "PHPRC", "PHP_INI_SCAN_DIR", "GCONV_PATH", "GLIBC_TUNABLES", "HOSTALIASES"))
RESERVED_PREFIXES = ("LD_", "MALLOC_", "PYTHON", "NODE_", "FAAS_", "MINIFAAS_")
MAX_CONCURRENCY = 10_000
MAX_QUEUE = 100_000
SECRETS_IN_QUERY = ("secrets are not taken in the query string, which ends up in logs and shell histories: "
                    "send them in the JSON form of the request, {\"secrets\": {\"NAME\": \"value\"}} with "
                    "Content-Type: application/json (`minifaas deploy --secret NAME=VALUE` does)")


def body(limit, what):
    """The request body, refusing more than `limit` bytes (before reading when the size is known)."""
    if request.content_length > limit:
        raise PayloadTooLarge("%s too large: %d bytes, the limit is %d bytes"
                              % (what, request.content_length, limit), limit=limit)
    data = request.body.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge("%s too large: the limit is %d bytes" % (what, limit), limit=limit)
    return data


# query(name)'s answers by (query string, name): an answer depends on nothing else, and most
# calls repeat a few query strings (?fn=NAME), whose parsing by bottle was a few per cent of
# the gateway's CPU per call. Bounded in entries and in the length of a query string kept.
_QUERIES = {}
QUERIES_MAX = 256
QUERY_KEPT_CHARS = 256
_NOT_UTF8 = object()


def query(name):
    """A query parameter as text, None when absent; BadRequest when it is not UTF-8."""
    key = (request.environ.get("QUERY_STRING", ""), name)
    value = _QUERIES.get(key, _QUERIES)
    if value is _QUERIES:
        value = request.query.getunicode(name)
        if value is None and name in request.query:
            value = _NOT_UTF8
        if len(key[0]) <= QUERY_KEPT_CHARS and len(_QUERIES) < QUERIES_MAX:
            _QUERIES[key] = value
    if value is _NOT_UTF8:
        raise BadRequest("query parameter %r is not valid UTF-8" % name)
    return value


def is_json():
    return request.content_type.split(";")[0].strip() == "application/json"


def looks_like_json_object(data):
    """True when a body starts as a JSON object would (a JSON deploy sent without its Content-Type)."""
    return data.lstrip(b" \t\r\n")[:1] == b"{"


def _whole(value):
    """A query's string as the int it spells; anything else as it is (the caller refuses what is
    not a whole number, with the value in its message)."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    return value


def limit(value, name, ceiling):
    """A per-function limit from the query (a string) or JSON (a number): an int in 1..ceiling."""
    value = _whole(value)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
        raise BadRequest("%s must be a whole number from 1 to %d, got %r" % (name, ceiling, value))
    return value


def flag(value, name):
    """A yes/no setting from the query ("true"/"false", "1"/"0") or JSON (a boolean); None when absent."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise BadRequest("%s must be true or false, got %r" % (name, value))
    return value


def count(value, name, ceiling, zero_means=None):
    """A count from the query or JSON: an int in 0..ceiling (0 meaning `zero_means`)."""
    value = _whole(value)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= ceiling:
        raise BadRequest("%s must be a whole number from 0 to %d, got %r" % (name, ceiling, value))
    return zero_means if value == 0 and zero_means is not None else value


def check_variables(env, secrets):
    """env and secrets ({NAME: value} each, or None for "not given") checked together: POSIX
    names, none the platform reserves, none in both, strings without NUL, bounded in count and
    bytes. BadRequest (400) or PayloadTooLarge (413) naming the variable, never a secret's value."""
    total, seen = 0, set()
    for what, variables in (("env", env), ("secrets", secrets)):
        if variables is None:
            continue
        if not isinstance(variables, dict):
            raise BadRequest("%r must be a JSON object of NAME: value strings" % what)
        for name, value in variables.items():
            if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
                raise BadRequest("invalid %s name %r: use a letter or '_', then letters, digits or '_' "
                                 "(at most 128 characters)" % (what, name))
            if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
                raise BadRequest("%s name %r is reserved: the platform sets it or it changes how the "
                                 "interpreter starts (reserved: %s and names starting with %s)"
                                 % (what, name, ", ".join(sorted(RESERVED_NAMES)), ", ".join(RESERVED_PREFIXES)))
            if name in seen:
                raise BadRequest("%r is both in env and in secrets: give it once" % name)
            seen.add(name)
            if not isinstance(value, str):
                raise BadRequest("the value of %s %r must be a JSON string" % (what, name))
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise BadRequest("the value of %s %r holds a lone UTF-16 surrogate" % (what, name)) from None
            if "\0" in value:
                raise BadRequest("the value of %s %r holds a NUL character, which no environment can" % (what, name))
            if size > MAX_VALUE_BYTES:
                raise PayloadTooLarge("the value of %s %r is %d bytes, the limit is %d"
                                      % (what, name, size, MAX_VALUE_BYTES), limit=MAX_VALUE_BYTES)
            total += len(name) + 1 + size
    if len(seen) > MAX_VARIABLES:
        raise BadRequest("%d variables in env and secrets together, the limit is %d" % (len(seen), MAX_VARIABLES))
    if total > MAX_CONFIG_BYTES:
        raise PayloadTooLarge("env and secrets together are %d bytes, the limit is %d"
                              % (total, MAX_CONFIG_BYTES), limit=MAX_CONFIG_BYTES)
    return env, secrets


def query_env():
    """The query form's env, from repeated env=NAME=VALUE parameters: {NAME: value}, or None
    when there is none. Secrets are refused in the query (SECRETS_IN_QUERY)."""
    for key in request.query.keys():
        if key.lower() in ("secret", "secrets") or key.lower().startswith("secret"):
            raise BadRequest(SECRETS_IN_QUERY)
    if "env" not in request.query:
        return None
    env = {}
    for item in request.query.getall("env"):
        try:
            item = item.encode("latin1").decode("utf-8")   # bottle hands query values as latin-1
        except UnicodeError:
            raise BadRequest("query parameter 'env' is not valid UTF-8") from None
        name, sep, value = item.partition("=")
        if not sep:
            raise BadRequest("env=%r: give env=NAME=VALUE" % name)
        if name in env:
            raise BadRequest("env %r is given twice" % name)
        env[name] = value
    return env


# The first bytes of a body that json.loads may read as an object: "{", JSON's whitespace, and
# what starts a byte order mark (UTF-8 EF, UTF-16/32 FE FF and FF FE) or a UTF-16/32 big-endian
# text (00). With any other first byte, its first character is neither "{" nor whitespace in
# every encoding json.detect_encoding picks, little-endian UTF-16/32 included.
_MAY_OPEN_AN_OBJECT = frozenset((b"{", b" ", b"\t", b"\n", b"\r", b"\x00", b"\xef", b"\xfe", b"\xff"))


def decode_input(data):
    """The function's stdin from an invoke body, per the contract: a JSON object with "input"
    gives that string's UTF-8 bytes or any other value's JSON text; any other body goes as is.

    The common body, an object whose "input" is a string, is read by orjson (a few per cent of
    the gateway's CPU per call less); everything else by the json module as before, which
    accepts more (NaN, a byte order mark, UTF-16) and keeps big integers exact.

    A body whose first byte cannot begin an object in any encoding json.loads reads (plain text,
    `curl -d "test data"`) goes as is at once: both parsers failing cost it about 4 us of
    exceptions."""
    if data[:1] not in _MAY_OPEN_AN_OBJECT:
        return data
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is dict and type(doc.get("input")) is str:
        return doc["input"].encode("utf-8")     # orjson refuses lone surrogates: none here
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(doc, dict) or "input" not in doc:
        return data
    value = doc["input"]
    if not isinstance(value, str):
        value = json.dumps(value)  # Python's default form, e.g. '{"a": 1}'; ASCII-only
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("input holds a lone UTF-16 surrogate (\\ud800-\\udfff): not valid text") from None


def code_form(data, need_name):
    """name, lang, code (bytes), timeout_ms, memory_mb, max_concurrency, max_queue, env and
    secrets from a JSON deploy body (need_name) or update body (name ignored, lang optional);
    BadRequest if malformed. env and secrets are checked by check_variables."""
    usage = DEPLOY_USAGE if need_name else UPDATE_USAGE
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("deploy body is not valid JSON: %s" % usage) from None
    if not isinstance(doc, dict):
        raise BadRequest("deploy body is not a JSON object: %s" % usage)
    for key in ("name", "lang", "code") if need_name else ("code",):
        if not isinstance(doc.get(key), str):
            raise BadRequest("%s needs %r as a JSON string: %s"
                             % ("deploy" if need_name else "update", key, usage))
    if not need_name and not isinstance(doc.get("lang", ""), str):
        raise BadRequest("'lang' must be a JSON string: %s" % usage)
    try:
        code = doc["code"].encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("code holds a lone UTF-16 surrogate: not valid text") from None
    return {"name": doc.get("name"), "lang": doc.get("lang"), "code": code,
            "timeout_ms": doc.get("timeout_ms"), "memory_mb": doc.get("memory_mb"), "reuse": doc.get("reuse"),
            "max_concurrency": doc.get("max_concurrency"), "max_queue": doc.get("max_queue"),
            "env": doc.get("env"), "secrets": doc.get("secrets")}
