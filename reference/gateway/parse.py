"""Reading a request's parts within the contract's limits: the body, query parameters,
per-function limits, an invocation's input and the JSON forms of deploy and update.
Every refusal is a FaasError (400 or 413) with a sentence saying what to send instead."""

import json

from bottle import request

from reference.wire.errors import BadRequest, PayloadTooLarge

DEPLOY_USAGE = ("send the source as the body of POST /deploy?name=N&lang=L, "
                "or a JSON object {\"name\", \"lang\", \"code\"}")
NAME_MISSING = ("the function's name is missing: POST /deploy?name=N&lang=L with the source as the body "
                "(N: a letter or digit, then up to 63 letters, digits, _ or -), or a JSON object "
                "{\"name\", \"lang\", \"code\"} with Content-Type: application/json")
UPDATE_USAGE = ("send the source as the body of PUT /function/NAME[?lang=L], "
                "or a JSON object {\"code\", \"lang\"}")


def body(limit, what):
    """The request body, refusing more than `limit` bytes (before reading when the size is known)."""
    if request.content_length > limit:
        raise PayloadTooLarge("%s too large: %d bytes, the limit is %d bytes"
                              % (what, request.content_length, limit), limit=limit)
    data = request.body.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge("%s too large: the limit is %d bytes" % (what, limit), limit=limit)
    return data


def query(name):
    """A query parameter as text, None when absent; BadRequest when it is not UTF-8."""
    value = request.query.getunicode(name)
    if value is None and name in request.query:
        raise BadRequest("query parameter %r is not valid UTF-8" % name)
    return value


def is_json():
    return request.content_type.split(";")[0].strip() == "application/json"


def looks_like_json_object(data):
    """True when a body starts as a JSON object would (a JSON deploy sent without its Content-Type)."""
    return data.lstrip(b" \t\r\n")[:1] == b"{"


def limit(value, name, ceiling):
    """A per-function limit from the query (a string) or JSON (a number): an int in 1..ceiling."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass  # refused just below, with the value in the message
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


def decode_input(data):
    """The function's stdin from an invoke body, per the contract: a JSON object with "input"
    gives that string's UTF-8 bytes or any other value's JSON text; any other body goes as is."""
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
    """name, lang, code (bytes), timeout_ms, memory_mb from a JSON deploy body (need_name) or
    update body (name ignored, lang optional); BadRequest if malformed."""
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
            "timeout_ms": doc.get("timeout_ms"), "memory_mb": doc.get("memory_mb"), "reuse": doc.get("reuse")}
