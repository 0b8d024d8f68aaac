"""`minifaas deploy | invoke | list | get | logs | delete | versions | rollback`: a client of the
gateway's HTTP API, as `faas-cli` or `wsk` are. Every command is one or two of the requests the
README shows with curl; what it prints is the answer's JSON (or, for `invoke`, the function's
output), and its exit code says whether it worked (0), the platform refused (1) or the
arguments were wrong (2).

The gateway's address is --url or FAAS_URL (default http://127.0.0.1:8080); the API key is
FAAS_API_KEY (or --api-key, which `ps` shows: prefer the environment); `invoke` sends the
invoke key FAAS_INVOKE_KEY instead when it is set (a gateway started with --invoke-key).
"""

import json
import os
import sys
import time
import urllib.parse

from reference import config
from reference.functions import languages

DEFAULT_URL = "http://%s:%d" % (config.DEFAULT_HOST, config.DEFAULT_PORT)
EXIT_REFUSED = 1
EXIT_USAGE = 2


class Refused(Exception):
    """The gateway answered with a failure (or could not be reached): its sentence."""

    def __init__(self, status, answer):
        self.status, self.answer = status, answer
        super().__init__(answer.get("error") if isinstance(answer, dict) else str(answer))


class Gateway:
    def __init__(self, url, api_key=None, timeout=90.0):
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def request(self, method, path, body=None, query=None, content_type=None):
        """The parsed JSON answer of a 2xx; Refused for anything else."""
        # Here, not at the top: cli.py imports this module before the gateway monkey-patches
        # with gevent, and urllib.request brings ssl, which must not be imported before that.
        import urllib.error
        import urllib.request

        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type} if content_type else {}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except OSError as e:
            raise Refused(None, {"error": "cannot reach the gateway at %s: %s (is `minifaas up` running? "
                                          "set --url or FAAS_URL)" % (self.url, getattr(e, "reason", e))}) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"error": raw.decode(errors="replace")}
        if not 200 <= status < 300:
            raise Refused(status, answer)
        return answer


def lang_of(path, lang):
    """The language given, or the one the file's extension names (hello.rs -> rust)."""
    if lang:
        return languages.resolve(lang).name
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    for name, spec in languages.LANGUAGES.items():
        if spec.ext == ext:
            return name
    raise ValueError("cannot tell the language of %s from its extension: give --lang" % path)


def cmd_deploy(gw, args):
    """The query form (the seed's curl command), or the JSON form when there are env or secrets:
    secrets never go in a URL, which ends up in logs."""
    with open(args.file, "rb") as f:
        code = f.read()
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    query = {"name": name, "lang": lang_of(args.file, args.lang)}
    for key in ("timeout_ms", "memory_mb", "max_concurrency", "max_queue"):
        if getattr(args, key, None) is not None:
            query[key] = getattr(args, key)
    if getattr(args, "reuse", False):
        query["reuse"] = "true"
    env, secrets = variables(args.env or (), "--env"), variables(args.secret or (), "--secret")
    if not env and not secrets:
        return gw.request("POST", "/deploy", code, query)
    try:
        body = dict(query, code=code.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("%s is not UTF-8 text, which the JSON form that carries --env and --secret "
                         "needs" % args.file) from None
    if env:
        body["env"] = env
    if secrets:
        body["secrets"] = secrets
    return gw.request("POST", "/deploy", json.dumps(body).encode(), content_type="application/json")


def variables(items, flag):
    """{NAME: value} from NAME=VALUE items; a bare NAME takes its value from this process's
    environment, NAME=@FILE from a file: neither puts the value on the command line (`ps`)."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise ValueError("%s %s: no value given and no %s in the environment" % (flag, name, name))
            value = os.environ[name]
        elif value.startswith("@"):
            with open(value[1:], encoding="utf-8") as f:
                value = f.read().rstrip("\n")
        found[name] = value
    return found


def invoke_body(args):
    """The request body: --input as JSON if it parses (so 3 or {"a":1} are values), else a string."""
    if args.input_file:
        with open(args.input_file, "rb") as f:
            return f.read()
    if args.input is None:
        return b""
    try:
        value = json.loads(args.input)
    except ValueError:
        value = args.input
    return json.dumps({"input": value}).encode()


def cmd_invoke(gw, args):
    query = {"fn": args.name}
    if args.async_:
        query["async"] = "1"
    try:
        answer = gw.request("POST", "/invoke", invoke_body(args), query)
    except Refused as exc:
        # A function that ran and failed (500) still has its output and stderr to show.
        if exc.status == 500 and isinstance(exc.answer, dict) and "output" in exc.answer and not args.json:
            _print_output(exc.answer)
        raise
    if args.json or args.async_:
        return answer
    _print_output(answer)
    return None


def _print_output(answer):
    sys.stdout.write(answer.get("output", ""))
    sys.stdout.flush()
    if answer.get("stderr"):
        sys.stderr.write(answer["stderr"])


def cmd_list(gw, args):
    return gw.request("GET", "/functions")


def cmd_get(gw, args):
    answer = gw.request("GET", "/function/" + urllib.parse.quote(args.name, safe=""))
    if args.code:
        sys.stdout.write(answer.get("code", ""))
        return None
    return answer


def cmd_logs(gw, args):
    """The function's log entries (GET /function/NAME/logs), one header line per call and its
    stderr under it; --follow asks again every --interval seconds for the entries after the
    last one seen (the answer's "next" cursor) until Ctrl-C. --json: the answers as they are."""
    path = "/function/" + urllib.parse.quote(args.name, safe="") + "/logs"
    query = {"limit": args.limit}
    try:
        while True:
            answer = gw.request("GET", path, query=query)
            if args.json:
                print(json.dumps(answer), flush=True)
            else:
                for entry in answer.get("logs", ()):
                    _print_log_entry(entry)
            if not args.follow:
                return None
            query = {"since": answer.get("next", 0), "limit": 1000}
            time.sleep(args.interval)
    except KeyboardInterrupt:   # --follow's end
        return None


def _print_log_entry(entry):
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry.get("time", 0)))
    head = "%s.%03d call=%s status=%s worker=%s" % (when, int(entry.get("time", 0) * 1000) % 1000,
                                                  entry.get("call_id", "-"), entry.get("status"),
                                                  entry.get("worker"))
    if entry.get("exit_code") not in (None, 0):
        head += " exit=%s" % entry["exit_code"]
    if entry.get("status") != 200 and entry.get("error"):
        head += " error=%s" % json.dumps(entry["error"])
    if entry.get("stderr_truncated"):
        head += " (stderr: last %d of %d bytes)" % (len(entry.get("stderr", "").encode()), entry["stderr_bytes"])
    lines = [head] + ["  " + line for line in entry.get("stderr", "").splitlines()]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def cmd_delete(gw, args):
    return gw.request("DELETE", "/function/" + urllib.parse.quote(args.name, safe=""))


def cmd_versions(gw, args):
    answer = gw.request("GET", "/function/" + urllib.parse.quote(args.name, safe=""))
    return {"ok": True, "name": answer["name"], "current": answer["id"], "versions": answer.get("versions", [])}


def cmd_rollback(gw, args):
    """POST /function/NAME/rollback?version=V: a new version with the code, settings, env and
    secrets of VERSION (a version number or an id): history is kept, as a revert commit keeps it."""
    return gw.request("POST", "/function/" + urllib.parse.quote(args.name, safe="") + "/rollback",
                      query={"version": args.version})


COMMANDS = {"deploy": cmd_deploy, "invoke": cmd_invoke, "list": cmd_list, "get": cmd_get,
            "logs": cmd_logs, "delete": cmd_delete, "versions": cmd_versions, "rollback": cmd_rollback}


def add_arguments(sub):
    """Add the client's subcommands to the `minifaas` parser's subparsers."""
    def client(name, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("--url", default=None, help="the gateway (env FAAS_URL, default %s)" % DEFAULT_URL)
        p.add_argument("--api-key", default=None, help="the API key; prefer the environment variable FAAS_API_KEY")
        return p

    p = client("deploy", "deploy a function from a file (the language from its extension, or --lang)")
    p.add_argument("file")
    p.add_argument("--name", default=None, help="the function's name (default: the file's name)")
    p.add_argument("--lang", default=None, help="c, rust, go, js, python, php or html")
    p.add_argument("--timeout-ms", dest="timeout_ms", type=int, default=None)
    p.add_argument("--memory-mb", dest="memory_mb", type=int, default=None)
    p.add_argument("--max-concurrency", dest="max_concurrency", type=int, default=None,
                   help="calls of it running at once; more wait in its queue in the gateway (0: no limit)")
    p.add_argument("--max-queue", dest="max_queue", type=int, default=None,
                   help="calls waiting for their turn before 429 (default 100)")
    p.add_argument("--reuse", action="store_true",
                   help="js, python, php: calls share one long-lived interpreter per worker, so "
                        "globals survive between calls (default: every call starts fresh)")
    p.add_argument("--env", action="append", metavar="NAME=VALUE",
                   help="an environment variable of the function (repeat for more)")
    p.add_argument("--secret", action="append", metavar="NAME[=VALUE|=@FILE]",
                   help="a secret: in its environment too, never shown by the API; NAME alone takes "
                        "the value from your environment, =@FILE from a file (=VALUE is seen by `ps`)")

    p = client("invoke", "run a function and print its output (its stderr on stderr)")
    p.add_argument("name", help="the function's name or id")
    p.add_argument("--input", default=None, help="the input: JSON if it parses, else a string")
    p.add_argument("--input-file", default=None, help="the raw body from a file")
    p.add_argument("--async", dest="async_", action="store_true", help="return a call id at once (202)")
    p.add_argument("--json", action="store_true", help="print the whole JSON answer")

    client("list", "every function")
    p = client("get", "one function's metadata (or --code: its source)")
    p.add_argument("name")
    p.add_argument("--code", action="store_true", help="print only the source")
    p = client("logs", "each call of a function: its time, call id, status, worker and stderr")
    p.add_argument("name")
    p.add_argument("--follow", "-f", action="store_true", help="print new calls as they come, until Ctrl-C")
    p.add_argument("--limit", type=int, default=100, help="how many of the last calls to show first (default 100)")
    p.add_argument("--interval", type=float, default=1.0, help="--follow: seconds between polls (default 1)")
    p.add_argument("--json", action="store_true", help="print the answers' JSON, one per line")
    p = client("delete", "remove a function and its versions")
    p.add_argument("name")
    p = client("versions", "the kept versions of a function")
    p.add_argument("name")
    p = client("rollback", "a new version with the code of an earlier one")
    p.add_argument("name")
    p.add_argument("version", help="a version number (see `versions`) or a version id")


def cli(args):
    key = args.api_key or os.environ.get("FAAS_API_KEY") or None
    if args.command == "invoke" and not args.api_key:
        key = os.environ.get("FAAS_INVOKE_KEY") or key
    gw = Gateway(args.url or os.environ.get("FAAS_URL") or DEFAULT_URL, key)
    try:
        answer = COMMANDS[args.command](gw, args)
    except Refused as exc:
        print("minifaas %s: %s" % (args.command, exc), file=sys.stderr)
        for key in ("details", "install"):
            if isinstance(exc.answer, dict) and exc.answer.get(key):
                print(exc.answer[key], file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, ValueError) as exc:
        print("minifaas %s: %s" % (args.command, exc), file=sys.stderr)
        return EXIT_USAGE
    if answer is not None:
        print(json.dumps(answer, indent=2))
    return 0
