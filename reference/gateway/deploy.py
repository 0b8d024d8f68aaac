"""Deploying: POST /deploy, PUT and DELETE /function/NAME, POST /function/NAME/rollback,
compiling C, Rust and Go to WebAssembly and checking the syntax of Python, PHP and JavaScript
on the way. `Deployer` is the core (check, compile, store, count in the metrics); `DeployRoutes`
only reads the request, calls it and shapes the answer.

What a version holds besides its code, each set at deploy and defaulting at an update to the
current version's: timeout_ms and memory_mb, max_concurrency and max_queue (the gateway's
admission, reference/gateway/admission.py), env and secrets (reference/functions/storage.py).
An update that gives env (or secrets) replaces the whole set; {} empties it.

A rollback stores a new version (the next number, `rolled_back_from` naming the old one) with
the old version's files (code.wasm and code.cwasm too: nothing is compiled again) and settings,
env and secrets: history only grows, as a revert commit keeps it, and the old id stays as it was."""

import time

from bottle import request, response

from reference.functions import languages
from reference.functions.storage import check_name
from reference.gateway import parse
from reference.gateway.catalog import public
from reference.wire.errors import BadRequest, FaasError, NotFound, PayloadTooLarge

LIMIT_FIELDS = ("timeout_ms", "memory_mb", "reuse", "max_concurrency", "max_queue")
# What a version's metadata holds of the user's settings, and a rollback copies.
SETTINGS = ("timeout_ms", "memory_mb", "reuse", "max_concurrency", "max_queue", "env")
# The languages whose calls can run in a long-lived interpreter of their function (reuse=true).
REUSE_LANGS = ("js", "python", "php")


class Deployer:
    """Checks, compiles and stores functions in `storage`, counting every deploy and update in
    `metrics`. compile_to_wasm / precompile / check_syntax default to reference.functions.toolchains
    and reference.worker.wasm.engine, imported on first use so the gateway starts without them."""

    def __init__(self, storage, limits, metrics, records, compile_to_wasm=None, precompile=None,
                 check_syntax=None):
        self.storage, self.limits, self.metrics, self.records = storage, limits, metrics, records
        self.compile_to_wasm, self.precompile, self.check_syntax = compile_to_wasm, precompile, check_syntax

    def deploy(self, name, lang, code, asked):
        """A new function `name`; `asked` holds the per-function limits asked for (or None)."""
        name = check_name(name)
        if not lang:
            raise BadRequest("say the function's language: lang=c, rust, go, js, python, php or html")
        return self._store(name, languages.resolve(lang), code, asked, "deploy")

    def update(self, name, lang, code, asked):
        """A new version of function `name` (its name, not an id); lang and limits default to
        the current version's."""
        current = self.storage.get(check_name(name))
        if current is None or current["name"] != name:
            raise NotFound("function not found", fn=name)
        return self._store(name, languages.resolve(lang or current["lang"]), code, asked, "update", current)

    def delete(self, name):
        """Remove the function and every version's files; its name is free again. The removed ids."""
        removed = self.storage.delete(check_name(name))
        self.records.forget(name)
        return removed

    def _store(self, name, lang, code, asked, op, current=None):
        if not code:
            raise BadRequest("the function's code is empty")
        if len(code) > self.limits.code_bytes:
            raise PayloadTooLarge("code too large: %d bytes, the limit is %d bytes"
                                  % (len(code), self.limits.code_bytes), limit=self.limits.code_bytes)
        meta = self._limits(asked, current or {})
        meta["reuse"] = self._reuse(lang, asked, current or {})
        env, secrets = parse.check_variables(asked.get("env"), asked.get("secrets"))
        if current is not None and (env is None or secrets is None):
            # What is not given carries over; a name moving between env and secrets: the given wins.
            given_env, given_secrets = env, secrets
            if given_env is None:
                env = {k: v for k, v in (current.get("env") or {}).items() if k not in (given_secrets or {})}
            if given_secrets is None:
                secrets = {k: v for k, v in self.storage.secrets(current).items() if k not in (given_env or {})}
            parse.check_variables(env, secrets)
        if env:
            meta["env"] = env
        if op == "deploy":
            # Answered before compiling: a conflict should not cost a compilation.
            self.storage.check_available(name)
        try:
            files = {"code.%s" % lang.ext: code}
            if lang.compiled:
                wasm_files, extra = self._compile(lang, code)
                files.update(wasm_files)
                meta.update(extra)
            else:
                self._check_syntax(lang, code)
            if op == "deploy":
                stored = self.storage.deploy(name, lang.name, files, meta, secrets)
            else:
                stored = self.storage.replace(name, lang.name, files, meta, secrets)
        except FaasError as exc:
            self.metrics.deployed(lang.name, op, exc.kind)
            raise
        self.metrics.deployed(lang.name, op, "ok", meta.get("compile_ms"))
        return stored

    def rollback(self, name, version):
        """A new version of `name` with the files, settings, env and secrets of its kept
        version `version` (a number, or a version's id); its metadata."""
        versions = self.storage.versions(check_name(name))
        if not versions:
            raise NotFound("function not found", fn=name)
        if version is None or version == "":
            raise BadRequest("say which version to make current again: POST /function/%s/rollback?version=N" % name)
        wanted = [v for v in versions if str(version) in (str(v.get("version", 1)), v["id"])]
        if not wanted:
            raise NotFound("%s has no version %s (kept: %s)" % (name, version, ", ".join(
                str(v.get("version", 1)) for v in reversed(versions))), fn=name, version=version)
        old = wanted[0]
        meta = {k: old[k] for k in SETTINGS + ("compile_ms", "compiler_ms", "precompile_ms", "toolchain", "wasm_size")
                if old.get(k) is not None}
        meta["rolled_back_from"] = old.get("version", 1)
        try:
            stored = self.storage.replace(name, old["lang"], self.storage.files(old), meta, self.storage.secrets(old))
        except FaasError as exc:
            self.metrics.deployed(old["lang"], "rollback", exc.kind)
            raise
        self.metrics.deployed(old["lang"], "rollback", "ok")
        return stored

    def _limits(self, asked, base):
        """timeout_ms and memory_mb: as asked (within the operator's ceilings), else the current
        version's, else the contract's defaults. max_concurrency and max_queue: as asked (0:
        none), else the current version's, else none (no limit; the admission's default queue)."""
        limits = self.limits
        meta = {
            "timeout_ms": parse.limit(asked.get("timeout_ms"), "timeout_ms", limits.max_timeout_ms)
            or base.get("timeout_ms") or limits.timeout_ms,
            "memory_mb": parse.limit(asked.get("memory_mb"), "memory_mb", limits.max_memory_mb)
            or base.get("memory_mb") or limits.memory_mb,
        }
        for key, ceiling in (("max_concurrency", parse.MAX_CONCURRENCY), ("max_queue", parse.MAX_QUEUE)):
            value = parse.count(asked.get(key), key, ceiling)
            if value is None:
                value = base.get(key)
            elif key == "max_concurrency" and value == 0:
                value = None    # 0 lifts the limit
            if value is not None:
                meta[key] = value
        return meta

    def _reuse(self, lang, asked, base):
        """reuse=true: the function's calls share a long-lived interpreter (its globals survive
        between calls in a worker); as asked, else the current version's, else false."""
        reuse = parse.flag(asked.get("reuse"), "reuse")
        if reuse is None:
            reuse = bool(base.get("reuse")) and lang.name in REUSE_LANGS
        if reuse and lang.name not in REUSE_LANGS:
            raise BadRequest("reuse=true means nothing for a %s function: only js, python and php calls "
                             "can share a long-lived interpreter" % lang.name)
        return reuse

    def _check_syntax(self, lang, source):
        """A syntax error is refused now (422), not at every call. Never in this process: a
        pathological source may exhaust the parser (toolchains.check_syntax runs a child)."""
        checker = self.check_syntax
        if checker is None:
            from reference.functions import toolchains
            checker = toolchains.check_syntax
        checker(lang.name, source)

    def _compile(self, lang, source):
        """code.wasm and code.cwasm for a compiled language, and what to add to the metadata:
        compile_ms is the whole of it as the deploy waits for it (preparing the build, the
        compiler, checking the module, precompiling it for wasmtime); compiler_ms and
        precompile_ms are its two big parts."""
        compiler, precompiler = self.compile_to_wasm, self.precompile
        if compiler is None:
            from reference.functions import toolchains
            compiler = toolchains.compile_to_wasm
        if precompiler is None:
            from reference.worker.wasm import engine as wasm
            precompiler = wasm.precompile
        started = time.perf_counter()
        compiled = compiler(lang.name, source)
        precompile_started = time.perf_counter()
        files = {"code.wasm": compiled.wasm, "code.cwasm": precompiler(compiled.wasm)}
        finished = time.perf_counter()
        extra = {"compile_ms": round((finished - started) * 1000, 1),
                 "compiler_ms": round(compiled.compile_ms, 1),
                 "precompile_ms": round((finished - precompile_started) * 1000, 1),
                 "toolchain": compiled.toolchain, "wasm_size": len(compiled.wasm)}
        return files, extra


class DeployRoutes:
    """The routes that change what is deployed. Each one: parse, call the Deployer, answer."""

    def __init__(self, deployer):
        self.deployer = deployer
        self.limits = deployer.limits

    def deploy(self):
        """Source as the body with ?name=N&lang=L, or a JSON object {name, lang, code, ...}."""
        if "name" in request.query:
            form = {key: parse.query(key) for key in ("name", "lang") + LIMIT_FIELDS}
            form["env"] = parse.query_env()
            form["code"] = parse.body(self.limits.code_bytes, "code")
        else:
            # JSON escapes make the body longer than the code; the code's own size is checked later.
            data = parse.body(self.limits.payload_bytes, "deploy body")
            if not parse.is_json() and not parse.looks_like_json_object(data):
                # The query form with its name forgotten (POST /deploy?lang=c), not a bad JSON body.
                raise BadRequest(parse.NAME_MISSING)
            form = parse.code_form(data, need_name=True)
        stored = self.deployer.deploy(form["name"], form["lang"], form["code"], form)
        response.status = 201
        return dict(public(stored), ok=True)

    def update(self, name):
        """A new version: the source as the body (?lang= optional, default the current one),
        or JSON {"code", "lang", "timeout_ms", "memory_mb", "env", "secrets", ...}; what is not
        given defaults to the current version's."""
        check_name(name)
        if parse.is_json():
            form = parse.code_form(parse.body(self.limits.payload_bytes, "update body"), need_name=False)
        else:
            form = {key: parse.query(key) for key in ("lang",) + LIMIT_FIELDS}
            form["env"] = parse.query_env()
            form["code"] = parse.body(self.limits.code_bytes, "code")
        stored = self.deployer.update(name, form.get("lang"), form["code"], form)
        return dict(public(stored), ok=True)

    def rollback(self, name):
        """POST /function/NAME/rollback?version=N: version N (or a version's id) current again,
        as a new version; the answer is the new version's metadata, as an update's."""
        stored = self.deployer.rollback(name, parse.query("version"))
        return dict(public(stored), ok=True)

    def delete(self, name):
        """Remove the function and every version's files; its name is free again."""
        removed = self.deployer.delete(name)
        return {"ok": True, "name": name, "deleted": removed}
