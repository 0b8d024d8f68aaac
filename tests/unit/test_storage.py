"""The functions tree: seed layout on disk, atomic deploys, one winner per name, restart-proof."""

import json
import multiprocessing
import os
import threading

import pytest

from reference.functions import storage as storage_mod
from reference.functions.storage import Storage
from reference.wire.errors import BadRequest, Conflict, FaasError, NotFound

HELLO_PY = b'print("hello")\n'


def visible_entries(root):
    """Everything in the tree except the name links' directory."""
    return sorted(name for name in os.listdir(root) if name != ".names")


def test_layout_on_disk(tmp_path):
    store = Storage(tmp_path)
    meta = store.deploy("hello", "c", {"code.c": b"int main(){}", "code.wasm": b"\0asm",
                                       "code.cwasm": b"ELF"}, {"compile_ms": 12.5, "toolchain": "zig"})
    fn_dir = tmp_path / meta["id"]
    assert meta["id"].startswith("hello_") and meta["id"][len("hello_"):].isdigit()
    assert sorted(os.listdir(fn_dir)) == ["code.c", "code.cwasm", "code.wasm", "metadata.json"]
    assert (fn_dir / "code.c").read_bytes() == b"int main(){}"
    on_disk = json.loads((fn_dir / "metadata.json").read_text())
    assert on_disk == meta
    assert on_disk["name"] == "hello" and on_disk["lang"] == "c" and on_disk["wasm"] is True
    assert on_disk["size"] == len(b"int main(){}")
    assert on_disk["timeout_ms"] == 5000 and on_disk["memory_mb"] == 128
    assert on_disk["compile_ms"] == 12.5 and on_disk["toolchain"] == "zig"
    assert os.readlink(tmp_path / ".names" / "hello") == meta["id"]
    assert visible_entries(tmp_path) == [meta["id"]]


def test_lookup_by_name_and_id_and_aliases(tmp_path):
    store = Storage(tmp_path)
    meta = store.deploy("greet", "py", {"code.py": HELLO_PY}, {"timeout_ms": 900})
    assert meta["lang"] == "python" and meta["wasm"] is False and meta["timeout_ms"] == 900
    by_name, by_id = store.get("greet"), store.get(meta["id"])
    assert by_name == by_id
    assert by_name["dir"] == str(tmp_path / meta["id"])
    assert store.code(by_name) == HELLO_PY
    assert store.exists("greet") and not store.exists("other")
    assert store.get("other") is None and store.get("../etc") is None and store.get("") is None
    assert [m["name"] for m in store.list()] == ["greet"]


def test_duplicate_name_is_a_conflict(tmp_path):
    store = Storage(tmp_path)
    store.deploy("hello", "python", {"code.py": HELLO_PY})
    with pytest.raises(Conflict) as info:
        store.deploy("hello", "js", {"code.js": b"console.log(1)"})
    assert info.value.status == 409
    assert str(info.value) == "function name 'hello' already exists, please choose another name"
    assert len(visible_entries(tmp_path)) == 1


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-dash", "_under", "x" * 65,
                                  "sp ace", "é", "a\0b", "a.b", None])
def test_bad_names_are_rejected(tmp_path, name):
    store = Storage(tmp_path)
    with pytest.raises(BadRequest):
        store.deploy(name, "python", {"code.py": HELLO_PY})
    assert visible_entries(tmp_path) == []


def test_longest_name_is_accepted(tmp_path):
    store = Storage(tmp_path)
    store.deploy("a" * 64, "python", {"code.py": HELLO_PY})
    assert store.exists("a" * 64)


def test_source_file_must_match_language(tmp_path):
    store = Storage(tmp_path)
    with pytest.raises(BadRequest):
        store.deploy("hello", "c", {"code.py": HELLO_PY})
    with pytest.raises(BadRequest):
        store.deploy("hello", "python", {"code.py": HELLO_PY, "../evil": b"x"})
    assert visible_entries(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path):
    store = Storage(tmp_path)
    # The second file cannot be written: the deploy fails half-way through writing.
    with pytest.raises(TypeError):
        store.deploy("hello", "c", {"code.c": b"int main(){}", "code.wasm": object()})
    assert visible_entries(tmp_path) == []
    assert not store.exists("hello") and store.list() == []
    store.deploy("hello", "c", {"code.c": b"int main(){}"})
    assert store.exists("hello")


def test_failed_rename_and_failed_claim_leave_nothing(tmp_path, monkeypatch):
    store = Storage(tmp_path)

    def disk_error(*args):
        raise OSError(5, "Input/output error (injected)")

    with monkeypatch.context() as m:
        m.setattr(storage_mod.os, "rename", disk_error)
        with pytest.raises(FaasError):
            store.deploy("hello", "python", {"code.py": HELLO_PY})
    assert visible_entries(tmp_path) == []

    with monkeypatch.context() as m:
        m.setattr(storage_mod.os, "symlink", disk_error)
        with pytest.raises(FaasError):
            store.deploy("hello", "python", {"code.py": HELLO_PY})
    assert visible_entries(tmp_path) == [] and os.listdir(tmp_path / ".names") == []
    assert store.deploy("hello", "python", {"code.py": HELLO_PY})["name"] == "hello"


def test_unwritable_root_is_a_faas_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FaasError):
        Storage(blocker / "functions")


def _crash_after_rename(root):
    """Child process: a deploy that dies (like kill -9) between the rename and the name claim."""
    store = Storage(root)
    storage_mod.os.symlink = lambda *args: os._exit(3)
    store.deploy("hello", "python", {"code.py": HELLO_PY})


def test_crash_leaves_an_invisible_orphan_that_is_swept(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_crash_after_rename, args=(str(tmp_path),))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    (orphan,) = visible_entries(tmp_path)
    (tmp_path / ".tmp-leftover").mkdir()

    store = Storage(tmp_path)
    assert store.get(orphan) is None and store.get("hello") is None
    assert not store.exists("hello") and store.list() == []
    # Young leftovers may be deploys in progress elsewhere: kept until they are old.
    assert store.sweep(min_age_s=60) == 0
    assert store.sweep(min_age_s=0) == 2
    assert visible_entries(tmp_path) == []
    assert store.deploy("hello", "python", {"code.py": HELLO_PY})["name"] == "hello"


def test_restart_finds_everything(tmp_path):
    store = Storage(tmp_path)
    deployed = [store.deploy("fn%d" % i, lang, {"code.%s" % ext: b"source %d" % i})
                for i, (lang, ext) in enumerate([("python", "py"), ("js", "js"), ("html", "html")])]
    again = Storage(tmp_path)
    for meta in deployed:
        assert again.get(meta["name"])["id"] == meta["id"]
        assert again.get(meta["id"])["name"] == meta["name"]
        assert again.code(again.get(meta["id"])) == store.code(meta)
    assert [m["id"] for m in again.list()] == [m["id"] for m in deployed]
    # A sweep on restart must not touch complete functions.
    assert again.sweep(min_age_s=0) == 0


def test_concurrent_deploys_from_threads_one_winner(tmp_path):
    store = Storage(tmp_path)
    results, barrier = [], threading.Barrier(16)

    def deploy(i):
        barrier.wait()
        try:
            results.append((i, store.deploy("race", "python", {"code.py": b"print(%d)" % i})))
        except Conflict as exc:
            results.append((i, exc))

    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [(i, r) for i, r in results if isinstance(r, dict)]
    assert len(results) == 16 and len(winners) == 1
    i, meta = winners[0]
    assert visible_entries(tmp_path) == [meta["id"]]
    assert Storage(tmp_path).code(meta) == b"print(%d)" % i


def _deploy_in_process(root, i, start, queue):
    start.wait()
    try:
        meta = Storage(root).deploy("race", "python", {"code.py": b"print(%d)" % i})
        queue.put(("won", meta["id"], i))
    except Conflict:
        queue.put(("conflict", None, i))


def test_concurrent_deploys_from_processes_one_winner(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_deploy_in_process, args=(str(tmp_path), i, start, queue))
             for i in range(6)]
    for p in procs:
        p.start()
    start.set()
    answers = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    won = [a for a in answers if a[0] == "won"]
    assert len(won) == 1 and sum(a[0] == "conflict" for a in answers) == 5
    _, fn_id, i = won[0]
    assert visible_entries(tmp_path) == [fn_id]
    store = Storage(tmp_path)
    assert store.get("race")["id"] == fn_id
    assert store.code(store.get("race")) == b"print(%d)" % i


# -- versions: replace and delete ------------------------------------------------------------

def test_replace_makes_a_new_version_and_keeps_the_old(tmp_path):
    store = Storage(tmp_path)
    first = store.deploy("hello", "python", {"code.py": HELLO_PY}, {"timeout_ms": 900})
    second = store.replace("hello", "python", {"code.py": b"print(2)\n"}, {"timeout_ms": 800})
    third = store.replace("hello", "js", {"code.js": b"console.log(3)"})
    assert [first["version"], second["version"], third["version"]] == [1, 2, 3]
    assert second["previous"] == first["id"] and third["previous"] == second["id"]
    assert len({first["id"], second["id"], third["id"]}) == 3  # unique even within one second
    assert all(m["id"].startswith("hello_") for m in (second, third))
    assert os.readlink(tmp_path / ".names" / "hello") == third["id"]
    current = store.get("hello")
    assert current["id"] == third["id"] and current["lang"] == "js" and store.code(current) == b"console.log(3)"
    # The old versions stay whole and reachable by id (a running invocation holds their directory).
    assert store.code(store.get(first["id"])) == HELLO_PY and store.get(second["id"])["timeout_ms"] == 800
    assert [m["version"] for m in store.versions("hello")] == [3, 2, 1]
    assert [m["id"] for m in store.list()] == [third["id"]]
    # After a restart, and after a sweep that must not mistake old versions for orphans.
    again = Storage(tmp_path)
    assert again.sweep(min_age_s=0) == 0
    assert again.get("hello")["id"] == third["id"] and again.get(first["id"])["version"] == 1


def test_replace_and_delete_unknown_names(tmp_path):
    store = Storage(tmp_path)
    with pytest.raises(NotFound):
        store.replace("ghost", "python", {"code.py": HELLO_PY})
    with pytest.raises(NotFound):
        store.delete("ghost")
    with pytest.raises(BadRequest):
        store.delete("../etc")
    assert visible_entries(tmp_path) == []


def test_delete_removes_every_version_and_frees_the_name(tmp_path):
    store = Storage(tmp_path)
    other = Storage(tmp_path)  # another process's view, with its cache filled
    first = store.deploy("hello", "python", {"code.py": HELLO_PY})
    second = store.replace("hello", "python", {"code.py": b"print(2)\n"})
    assert other.get(first["id"]) and other.get("hello")["id"] == second["id"]
    assert store.delete("hello") == [second["id"], first["id"]]
    assert visible_entries(tmp_path) == []
    for view in (store, other):
        assert view.get("hello") is None and view.get(first["id"]) is None and view.list() == []
    assert store.deploy("hello", "python", {"code.py": HELLO_PY})["version"] == 1


def test_concurrent_replaces_are_serialized(tmp_path):
    store = Storage(tmp_path)
    store.deploy("hello", "python", {"code.py": HELLO_PY})
    barrier = threading.Barrier(6)
    results = []

    def update(i):
        barrier.wait()
        results.append(store.replace("hello", "python", {"code.py": b"print(%d)\n" % i}))

    threads = [threading.Thread(target=update, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m["version"] for m in results) == [2, 3, 4, 5, 6, 7]
    chain = store.versions("hello")
    assert [m["version"] for m in chain] == [7, 6, 5, 4, 3, 2, 1]
    assert len(visible_entries(tmp_path)) == 7


def test_interrupted_update_leaves_only_sweepable_leftovers(tmp_path):
    store = Storage(tmp_path)
    meta = store.deploy("hello", "python", {"code.py": HELLO_PY})
    # What a crash between writing the new version and renaming its link leaves behind.
    os.mkdir(tmp_path / "hello_99")
    (tmp_path / "hello_99" / "metadata.json").write_text(json.dumps({"id": "hello_99", "name": "hello"}))
    os.symlink("hello_99", tmp_path / ".names" / ".tmp-hello-1")
    assert store.get("hello_99") is None and store.get("hello")["id"] == meta["id"]
    assert store.sweep(min_age_s=0) == 2
    assert visible_entries(tmp_path) == [meta["id"]]
    assert sorted(os.listdir(tmp_path / ".names")) == ["hello"]


def test_a_name_that_is_a_kept_id_is_refused(tmp_path):
    store = Storage(tmp_path)
    first = store.deploy("hello", "python", {"code.py": HELLO_PY})
    second = store.replace("hello", "python", {"code.py": b"print(2)\n"})
    for taken in (first["id"], second["id"]):   # the current version's id and an old one's
        with pytest.raises(Conflict) as info:
            store.deploy(taken, "python", {"code.py": HELLO_PY})
        assert "is the id of a version of function 'hello'" in info.value.message
    assert store.get(first["id"])["name"] == "hello" and len(store.list()) == 1


def test_a_new_id_never_equals_an_existing_name(tmp_path, monkeypatch):
    """The reverse shadowing: deploy "f" at the second some function's name already spells."""
    store = Storage(tmp_path)
    monkeypatch.setattr(storage_mod.time, "time", lambda: 500.0)
    early = store.deploy("f_1000", "python", {"code.py": b"print('early')\n"})
    monkeypatch.setattr(storage_mod.time, "time", lambda: 1000.0)
    late = store.deploy("f", "python", {"code.py": HELLO_PY})
    assert late["id"] == "f_1000_2"
    assert store.get("f_1000")["id"] == early["id"] and store.get("f")["id"] == late["id"]
    updated = store.replace("f_1000", "python", {"code.py": b"print('again')\n"})
    assert updated["id"] == "f_1000_1000"       # no name holds it: no suffix
    assert store.get("f_1000_2")["name"] == "f" and store.get("f_1000")["id"] == updated["id"]


def test_secrets_are_kept_apart_readable_by_the_owner_only(tmp_path):
    store = Storage(tmp_path)
    old_umask = os.umask(0)     # even with a permissive umask the file is 0600
    try:
        meta = store.deploy("conf", "python", {"code.py": HELLO_PY}, {"env": {"MODE": "a"}},
                            secrets={"TOKEN": "t-1", "DB": "d-1"})
    finally:
        os.umask(old_umask)
    fn_dir = tmp_path / meta["id"]
    assert sorted(os.listdir(fn_dir)) == ["code.py", "metadata.json", "secrets.json"]
    assert oct(os.stat(fn_dir / "secrets.json").st_mode & 0o777) == "0o600"
    on_disk = (fn_dir / "metadata.json").read_text()
    assert "t-1" not in on_disk and json.loads(on_disk)["secrets"] == ["DB", "TOKEN"]
    assert meta["secrets"] == ["DB", "TOKEN"] and meta["env"] == {"MODE": "a"}
    found = store.get("conf")
    assert store.secrets(found) == {"TOKEN": "t-1", "DB": "d-1"}
    assert store.environment(found) == {"MODE": "a", "TOKEN": "t-1", "DB": "d-1"}
    # A fresh Storage (a restarted gateway) reads them back from the file.
    assert Storage(tmp_path).environment(Storage(tmp_path).get(meta["id"]))["TOKEN"] == "t-1"


def test_each_version_keeps_its_own_secrets_and_a_meta_cannot_smuggle_values(tmp_path):
    store = Storage(tmp_path)
    first = store.deploy("conf", "python", {"code.py": HELLO_PY}, secrets={"TOKEN": "one"})
    second = store.replace("conf", "python", {"code.py": HELLO_PY},
                           {"secrets": {"TOKEN": "leaked"}, "env": {"E": "2"}})
    assert "secrets" not in second and store.secrets(store.get(second["id"])) == {}
    assert store.environment(store.get(second["id"])) == {"E": "2"}
    assert store.secrets(store.get(first["id"])) == {"TOKEN": "one"}
    assert "leaked" not in (tmp_path / second["id"] / "metadata.json").read_text()
    assert not (tmp_path / second["id"] / "secrets.json").exists()


def test_files_gives_back_every_code_file_of_a_version(tmp_path):
    store = Storage(tmp_path)
    files = {"code.c": b"int main(){}", "code.wasm": b"\0asm", "code.cwasm": b"ELF"}
    meta = store.deploy("comp", "c", files, secrets={"S": "x"})
    assert store.files(meta) == files     # neither metadata.json nor secrets.json
