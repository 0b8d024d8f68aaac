"""The languages a function may be written in, their aliases, and how each one runs."""

from dataclasses import dataclass

from reference.wire.errors import BadRequest


@dataclass(frozen=True)
class Language:
    name: str          # canonical name, stored in metadata.json
    ext: str           # source file is functions/<id>/code.<ext>
    compiled: bool     # compiled to a WASI module (code.wasm) at deploy time
    aliases: tuple = ()


LANGUAGES = {
    lang.name: lang
    for lang in (
        Language("c", "c", True),
        Language("rust", "rs", True, ("rs",)),
        Language("go", "go", True),
        Language("js", "js", False, ("javascript", "node")),
        Language("python", "py", False, ("py",)),
        Language("php", "php", False),
        Language("html", "html", False),
    )
}

_BY_ALIAS = {alias: lang for lang in LANGUAGES.values() for alias in (lang.name,) + lang.aliases}


def resolve(name):
    """The Language for a name or alias (case-insensitive); BadRequest names the choices."""
    lang = _BY_ALIAS.get((name or "").strip().lower())
    if lang is None:
        raise BadRequest(
            "unknown language %r: use one of %s" % (name, ", ".join(sorted(_BY_ALIAS)))
        )
    return lang
