"""The gateway's durable records: invocation records (with each call's stderr, the logs) and
async calls, in one SQLite file under the functions directory, `<functions>/.gateway.sqlite`
(WAL mode; a name starting with a dot is never a function's directory).

Two ways in, so that the hot path does not wait on the disk:

- Invocation records go through `enqueue`: a bounded in-memory queue that a single writer
  thread (a real OS thread, even under gevent's monkey-patching) drains in batches, one
  transaction per batch. A sync invocation only appends to a deque. Past `QUEUE_MAX` waiting
  rows (the disk cannot keep up) new rows are dropped and counted (`dropped`), never waited for.
- Async calls' states go through `write` and are committed before it returns: the 202 of an
  async call is answered only once its row (with its input) is on disk. Under gevent the
  statement runs in gevent's threadpool (a greenlet blocked in sqlite's C code would stop the
  whole hub); without gevent (waitress, tests), in the calling thread.

Durability: WAL; async calls' rows with synchronous=FULL (they survive the gateway being
killed and the machine losing power), records with NORMAL (they survive the gateway being
killed; a power loss may take the last batch). Bounds (checked by the writer every `PRUNE_EVERY_S` or every
`PRUNE_EVERY_ROWS` rows, not on every insert): records older than `MAX_AGE_S`, past
`PER_FUNCTION` per function or past `MAX_RECORDS` in all are deleted; finished async calls
older than `CALLS_MAX_AGE_S` or past `CALLS_MAX_BYTES` of answers. SQLite reuses the freed
pages, so the file stays near its high-water mark instead of growing.
"""

import _thread
import itertools
import json
import logging
import os
import sqlite3
import sys
import time
import uuid

import orjson

log = logging.getLogger(__name__)

FILE_NAME = ".gateway.sqlite"
QUEUE_MAX = 50_000          # records waiting for the writer; past this, dropped (and counted)
BATCH_MAX = 2_000           # rows per transaction
BATCH_WAIT_S = 0.01         # the writer, woken, waits this long for more rows before writing
MAX_AGE_S = 7 * 24 * 3600.0     # invocation records (and logs): at most a week ...
PER_FUNCTION = 1_000            # ... the last 1,000 of each function ...
MAX_RECORDS = 50_000            # ... and 50,000 in all (each with at most 4 KiB of stderr)
CALLS_MAX_AGE_S = 24 * 3600.0   # finished async calls: a day ...
CALLS_MAX_BYTES = 256 * 1024 * 1024   # ... and at most this much answer text
PRUNE_EVERY_S = 60.0
PRUNE_EVERY_ROWS = 5_000
BUSY_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    time REAL NOT NULL,
    record TEXT NOT NULL,
    stderr TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS invocations_by_name ON invocations (name, seq);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    fn_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    status INTEGER,
    body TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    payload BLOB,
    callback_url TEXT,
    callback_state TEXT,
    callback TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_state ON calls (state, owner);
"""
# Columns added since a store was first made: (table, column, type). A store made before them
# gets them when it is opened (ALTER TABLE ... ADD COLUMN), its rows kept, the new columns NULL.
ADDED_COLUMNS = [
    ("calls", "idem_key", "TEXT"),        # the Idempotency-Key of a keyed call (sync or async)
    ("calls", "fingerprint", "TEXT"),     # what the key was first used for: function and input
]
INDEXES = "CREATE INDEX IF NOT EXISTS calls_by_key ON calls (idem_key) WHERE idem_key IS NOT NULL;"

# An invocation record, and the same for a whole batch in one statement: its rows as one JSON
# array read back by json_each. executemany steps once per row and lets go of the GIL and takes
# it back at each step, which the gateway's main thread, busy with requests, pays for (a call's
# bookkeeping in-process, median of 6 alternated runs: 32.4 -> 27.8 us, docs/PERFORMANCE.md). Where the
# SQLite has no JSON functions, executemany (BULK_OK turns the batch form off).
INSERT_RECORD = "INSERT INTO invocations (name, time, record, stderr) VALUES (?, ?, ?, ?)"
_BULK = {INSERT_RECORD: "INSERT INTO invocations (name, time, record, stderr) SELECT json_extract(value, '$[0]'), "
                        "json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') "
                        "FROM json_each(?)"}
BULK_OK = True


def _real_threads():
    """start_new_thread, allocate_lock and get_ident of real OS threads, whether or not gevent
    has monkey-patched the process, and whether it has."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        get = monkey.get_original
        return (get("_thread", "start_new_thread"), get("_thread", "allocate_lock"),
                get("_thread", "get_ident"), get("time", "sleep"), True)
    return _thread.start_new_thread, _thread.allocate_lock, _thread.get_ident, time.sleep, False


def real_lock():
    """A lock of real OS threads (gevent's monkey-patched one is written in Python): for state
    held only for a few statements without any wait, so that no greenlet can switch while it
    is held, and shared with real threads (the store's writer, waitress's threads)."""
    return _real_threads()[1]()


def process_owner(pid=None):
    """A name for a live process that no later process reuses: its pid and its start time (in
    clock ticks since boot, /proc/PID/stat's 22nd field). None when there is no such process."""
    pid = os.getpid() if pid is None else pid
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return "%d:%s" % (pid, fields[19].decode())


def owner_alive(owner):
    """Whether the process that wrote `owner` (a Store's: PID:START:INSTANCE) still runs."""
    process = owner.rsplit(":", 1)[0]
    try:
        pid = int(process.split(":", 1)[0])
    except ValueError:
        return False
    return process_owner(pid) == process


class Store:
    """The SQLite file at `path`. Thread-safe; see the module's docstring."""

    def __init__(self, path):
        self.path = path
        # The calls this Store accepts are its own: its process (alive or not) and which Store.
        self.owner = "%s:%s" % (process_owner(), uuid.uuid4().hex[:8])
        (self._start_thread, allocate_lock, self._ident, self._real_sleep,
         self._gevent) = _real_threads()
        self._connections = {}           # real thread id -> its connection
        self._queue = []                 # (sql, params) waiting for the writer
        self._queue_lock = allocate_lock()
        self._wake = allocate_lock()
        self._wake.acquire()             # held while there is nothing to write
        self._signalled = False          # _wake released and not yet taken (under _queue_lock)
        self._enqueued = self._committed = 0
        self.dropped = 0
        self._stopping = False
        self._stopped = allocate_lock()
        self._stopped.acquire()
        self._last_prune, self._since_prune = 0.0, 0
        self._writer_ident = None
        # Its rows hold inputs, outputs and stderr: the gateway's user only (-wal and -shm
        # take the database's mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        with self._connection() as db:
            db.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                if column not in [row[1] for row in db.execute("PRAGMA table_info(%s)" % table)]:
                    db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, kind))
            db.executescript(INDEXES)
        self._start_thread(self._writer, ())

    # -- connections --------------------------------------------------------------------------

    def _connection(self):
        """This real thread's connection (sqlite3's objects stay in the thread that made them).
        The writer's is synchronous=NORMAL: its records survive the gateway being killed, not
        always a power loss, and it does not wait for the disk at every batch."""
        ident = self._ident()
        db = self._connections.get(ident)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=%s" % ("NORMAL" if ident == self._writer_ident else "FULL"))
            db = self._connections[ident] = _Connection(db)
        return db

    def blocking(self, fn, *args):
        """fn(*args) where blocking in C is harmless: gevent's threadpool when the process is
        gevent's, else here."""
        if self._gevent:
            import gevent
            return gevent.get_hub().threadpool.apply(fn, args)
        return fn(*args)

    def write(self, statements):
        """Run `statements` ([(sql, params)]) in one transaction, committed when this returns."""
        self.blocking(self._write_now, statements)

    def read(self, sql, params=(), flush=True):
        """The rows of a query; with `flush`, once what was enqueued before is written (a record
        of a call answered a moment ago is found)."""
        if flush:
            self.flush()
        return self.blocking(self._read_now, sql, params)

    def _write_now(self, statements):
        with self._connection() as db:
            db.transaction(statements)

    def _read_now(self, sql, params):
        with self._connection() as db:
            return db.execute(sql, params).fetchall()

    # -- the writer thread ----------------------------------------------------------------------

    def enqueue(self, sql, params):
        """Write later, in the writer's next batch; never blocks. False when dropped (queue full)."""
        with self._queue_lock:
            if len(self._queue) >= QUEUE_MAX:
                self.dropped += 1
                return False
            self._queue.append((sql, params))
            self._enqueued += 1
            # Only the first record since the writer took its batch wakes it: under load the
            # rest found the lock released already, and a RuntimeError each cost a request 1 us.
            signal, self._signalled = not self._signalled, True
        if signal:
            self._wake.release()
        return True

    def flush(self, timeout=10.0):
        """Wait (cooperatively) until what was enqueued so far is committed; False on timeout."""
        target = self._enqueued
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while self._committed < target:
            if time.monotonic() > deadline or self._stopping:
                return False
            time.sleep(pause)   # gevent's sleep when patched: the hub keeps running
            pause = min(pause * 2, 0.01)
        return True

    def _writer(self):
        self._writer_ident = self._ident()
        try:
            self.prune()
        except sqlite3.Error as exc:
            sys.stderr.write("gateway store: pruning failed: %s\n" % exc)
        while True:
            if self._wake.acquire(timeout=PRUNE_EVERY_S) and not self._stopping:
                self._real_sleep(BATCH_WAIT_S)   # let a batch gather: one transaction, not one per call
            with self._queue_lock:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                more = bool(self._queue)
                # What comes after this batch must wake the writer again (unless `more` does).
                self._signalled = more
            if batch:
                try:
                    with self._connection() as db:
                        db.transaction(batch)
                except Exception as exc:   # the writer must live on (a full disk may come back)
                    sys.stderr.write("gateway store: %d records not written: %s\n" % (len(batch), exc))
                self._committed += len(batch)
                self._since_prune += len(batch)
            if more:
                try:
                    self._wake.release()
                except RuntimeError:
                    pass
            if self._since_prune >= PRUNE_EVERY_ROWS or time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
                try:
                    self.prune()
                except Exception as exc:
                    sys.stderr.write("gateway store: pruning failed: %s\n" % exc)
            if self._stopping and not more:
                self._stopped.release()
                return

    def prune(self, now=None):
        """Apply the bounds (module docstring). Runs in the writer thread (first when it starts)."""
        now = time.time() if now is None else now
        self._last_prune, self._since_prune = time.monotonic(), 0
        statements = [
            ("DELETE FROM invocations WHERE time < ?", (now - MAX_AGE_S,)),
            ("DELETE FROM invocations WHERE seq <= (SELECT seq FROM invocations ORDER BY seq DESC "
             "LIMIT 1 OFFSET ?)", (MAX_RECORDS,)),
            ("DELETE FROM calls WHERE state = 'done' AND finished < ?", (now - CALLS_MAX_AGE_S,)),
            ("DELETE FROM calls WHERE seq IN (SELECT seq FROM (SELECT seq, SUM(size) OVER "
             "(ORDER BY seq DESC) AS total FROM calls WHERE state = 'done') WHERE total > ?)",
             (CALLS_MAX_BYTES,)),
        ]
        with self._connection() as db:
            crowded = db.execute("SELECT name FROM invocations GROUP BY name HAVING COUNT(*) > ?",
                                 (PER_FUNCTION,)).fetchall()
            for (name,) in crowded:
                statements.append(("DELETE FROM invocations WHERE name = ? AND seq <= (SELECT seq FROM "
                                   "invocations WHERE name = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                                   (name, name, PER_FUNCTION)))
            db.transaction(statements)

    def close(self, timeout=10.0):
        """Write what is queued, then stop the writer."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake.release()
        except RuntimeError:
            pass
        self._stopped.acquire(timeout=timeout)


class _Connection:
    """A sqlite3 connection used as `with conn as db:` (no locking: one per thread)."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=()):
        return self.db.execute(sql, params)

    def executescript(self, script):
        self.db.executescript(script)

    def transaction(self, statements):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # Runs of the same statement (a batch of records) go in one statement, or one executemany.
            for sql, group in itertools.groupby(statements, key=lambda s: s[0]):
                rows = [params for _, params in group]
                if not (len(rows) > 1 and self._bulk(sql, rows)):
                    self.db.executemany(sql, rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _bulk(self, sql, rows):
        """`rows` of `sql` written by its batch form; False when it has none or cannot (then
        executemany does it)."""
        global BULK_OK
        bulk = _BULK.get(sql) if BULK_OK else None
        if bulk is None:
            return False
        try:
            packed = orjson.dumps(rows).decode()
        except TypeError:               # a value JSON cannot hold (an int past 64 bits)
            return False
        try:
            self.db.execute(bulk, (packed,))
        except sqlite3.OperationalError as exc:   # no json_each in this SQLite: row by row from now on
            sys.stderr.write("gateway store: records written one by one (%s)\n" % exc)
            BULK_OK = False
            return False
        return True


_ENCODER = json.JSONEncoder(separators=(",", ":"))   # made once: json.dumps with options makes one per call


def encode(value):
    return _ENCODER.encode(value)


def encode_record(record):
    """An invocation record as its JSON text, with orjson: a third of what the json module
    takes per record, and the same values read back. Its fields are the gateway's own and what
    came in a frame (orjson-decoded: no NaN, no non-string keys); anything orjson refuses (an
    int past 64 bits) is left to the json module."""
    try:
        return orjson.dumps(record).decode()
    except TypeError:
        return _ENCODER.encode(record)
