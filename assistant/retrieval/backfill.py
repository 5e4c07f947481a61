"""The background embedder: contextual MiniLM vectors for passages that only have a static one.

``docs add`` writes passages, BM25 rows and static vectors at the speed of parsing; MiniLM
(~30 passages per CPU-second on two cores) would make it 100× slower, so its vectors are
filled in here, afterwards, by a separate process (``python -m assistant.retrieval.backfill``)
that:

- runs at the lowest CPU priority (``nice 19``) and **yields while a turn is generating**:
  every front end wraps generation in :func:`generating`, which leaves a marker file; the
  embedder checks for live markers between batches of :data:`BATCH` passages (~0.5–1 s of
  work each), so an answer competes with at most one batch;
- pauses on battery when ``docs_background_on_battery`` is off;
- **survives kills and restarts**: each batch is committed with a cursor (the highest
  passage id done, per vector space). Passage ids only grow (assistant/storage/scale_schema.py),
  so a re-indexed passage always lies above the cursor; the next ``docs add``/``sync`` or
  the next conversation with documents starts the process again and it carries on;
- runs once per database (an exclusive lock file beside it) and records what it is doing
  in ``background_status`` (``enclave docs status`` and the TUI show it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.retrieval.vectors import find_space, passage_text, space_id, vector_blob

if TYPE_CHECKING:
    from assistant.core.settings import Settings
    from assistant.retrieval.index import Embedder, Library
    from assistant.storage.database import Store

log = logging.getLogger(__name__)

#: Passages per batch: small enough that an answer waits at most one batch for the embedder
#: to notice it (~0.3 s at 30 passages/s; 24 was 3 s on the loaded machine, longer than a
#: short answer), large enough to amortise the commit.
BATCH = 8
#: Seconds between checks while paused.
PAUSE_S = 0.5
#: Seconds between two writes of the status row while running.
STATUS_EVERY_S = 2.0
STATUS_NAME = "minilm"
LOCK_FILE = "backfill.lock"


def run_dir(settings: Settings) -> Path:
    """Where the generating markers and the embedder's lock live (private to the user)."""
    path = settings.locations.data / "run"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


# --------------------------------------------------------------------------- yielding
@contextlib.contextmanager
def generating(settings: Settings) -> Iterator[None]:
    """Mark "a turn is generating" for the duration: the background embedder waits."""
    marker: Path | None = None
    try:
        marker = run_dir(settings) / f"generating-{os.getpid()}-{time.monotonic_ns()}"
        marker.touch(mode=0o600)
    except OSError:  # a read-only data folder: the embedder simply does not yield
        marker = None
    try:
        yield
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()


def busy(folder: Path) -> bool:
    """Whether any live process is generating (markers of dead processes are removed)."""
    import psutil

    found = False
    for marker in folder.glob("generating-*"):
        try:
            pid = int(marker.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if psutil.pid_exists(pid):
            found = True
        else:
            with contextlib.suppress(OSError):
                marker.unlink()
    return found


def on_battery() -> bool:
    import psutil

    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return False
    return battery is not None and not battery.power_plugged


# --------------------------------------------------------------------------- the work
class Backfill:
    """Fill the vectors of ``library``'s passages that lack one in ``embedder``'s space,
    in committed batches: MiniLM in the background process; static ones in ``docs add``
    for passages indexed before the static table was installed."""

    def __init__(self, library: Library, embedder: Embedder | Any, kind: str = "minilm") -> None:
        self.library = library
        self.embedder = embedder
        self.store = library.store
        with self.store.transaction() as db:
            self.space = space_id(db, embedder.sha256, kind, int(getattr(embedder, "dim", 384)))
        self.counter = f"backfill:{self.space}"

    def cursor(self) -> int:
        row = self.store.db.execute("select value from counters where name = ?", [self.counter]).fetchone()
        return int(row[0]) if row else 0

    def step(self, batch: int = BATCH) -> int:
        """Embed the next ``batch`` passages above the cursor that lack a MiniLM vector;
        returns how many passages were looked at (0: nothing left)."""
        db = self.store.db
        # Every passage id up to ``top`` was committed before this read (the counter moves
        # in the inserting transaction), so a select that comes back short has seen them all.
        top = int(db.execute("select value from counters where name = 'chunks'").fetchone()[0])
        rows = db.execute(
            "select c.id, c.heading, c.text from chunks c where c.id > ? and not exists "
            "(select 1 from passage_vectors v where v.space = ? and v.chunk_id = c.id) order by c.id limit ?",
            [self.cursor(), self.space, batch],
        ).fetchall()
        if not rows:
            self._advance(top)  # nothing left: later scans start at the end
            return 0
        vectors = self.embedder.embed([passage_text(h, t) for _, h, t in rows])
        with self.store.transaction() as tx:
            # A passage deleted meanwhile is skipped: the select below sees only live ones.
            marks = ",".join("?" * len(rows))
            alive = {r[0] for r in tx.execute(f"select id from chunks where id in ({marks})", [r[0] for r in rows])}
            tx.conn.executemany(
                "insert or ignore into passage_vectors (space, chunk_id, vector) values (?, ?, ?)",
                [
                    (self.space, r[0], vector_blob(np.asarray(v)))
                    for r, v in zip(rows, vectors, strict=True)
                    if r[0] in alive
                ],
            )
            mark = int(rows[-1][0]) if len(rows) == batch else max(top, int(rows[-1][0]))
            tx.execute(
                "insert into counters (name, value) values (?, ?) "
                "on conflict (name) do update set value = max(value, excluded.value)",
                [self.counter, mark],
            )
        return len(rows)

    def _advance(self, mark: int) -> None:
        if mark > self.cursor():
            with self.store.transaction() as tx:
                tx.execute(
                    "insert into counters (name, value) values (?, ?) "
                    "on conflict (name) do update set value = max(value, excluded.value)",
                    [self.counter, mark],
                )

    def run(
        self,
        limit: int | None = None,
        should_wait: Callable[[], str | None] | None = None,
        report: Callable[[int], None] | None = None,
        batch: int = BATCH,
    ) -> int:
        """Work until nothing is left (or ``limit`` passages were looked at); before each
        batch, ``should_wait()`` may name a reason to pause. Returns passages looked at."""
        done = 0
        while limit is None or done < limit:
            if should_wait is not None:
                paused = False
                while should_wait() is not None:
                    if report and not paused:
                        report(-1)
                    paused = True
                    time.sleep(PAUSE_S)
            n = self.step(batch if limit is None else min(batch, limit - done))
            if n == 0:
                break
            done += n
            if report:
                report(n)
        return done


def vector_progress(library: Library) -> dict[str, Any]:
    """Passages, how many have a static and a MiniLM vector, and the background's state."""
    db = library.db
    total = int(db.execute("select count(*) from chunks").fetchone()[0])
    out: dict[str, Any] = {"passages": total, "static": 0, "minilm": 0, "background": None}
    spaces = {str(r[0]): int(r[1]) for r in db.execute("select kind, id from vector_spaces")}
    if library.static is not None and (sid := find_space(db, library.static.sha256)) is not None:
        out["static"] = _count(db, sid)
    sha = None
    if library.has_embedder:
        sha = library._embedder.sha256 if library._embedder is not None else library._embedder_sha256()
    if sha and (mid := find_space(db, sha)) is not None:
        out["minilm"] = _count(db, mid)
    elif "minilm" in spaces and not library.has_embedder:
        out["minilm_other_model"] = True
    row = db.execute(
        "select state, detail, rate, updated_at from background_status where name = ?", [STATUS_NAME]
    ).fetchone()
    if row:
        detail = json.loads(row[1]) if row[1] else {}
        state = str(row[0])
        pid = detail.get("pid")
        if state in ("running", "paused", "indexing") and not (pid and _alive(int(pid))):
            state = "stopped"
        remaining = max(0, total - out["minilm"])
        rate = float(row[2]) if row[2] else None
        reason, hint = str(detail.get("reason", "")), ""
        if state in ("stopped", "failed") and (remaining or state == "failed"):
            reason, hint = _why_stopped(_free(library), reason)
        out["background"] = {
            "state": state,
            "reason": reason,
            "hint": hint,
            "rate": rate,
            "eta_s": remaining / rate if rate and remaining and state == "running" else None,
            "updated_at": row[3],
        }
    elif library.has_embedder and total > out["minilm"] and _low(free := _free(library)):
        # It died before it could write a word (a full disk): say so rather than nothing.
        reason, hint = _why_stopped(free, "")
        out["background"] = {
            "state": "stopped",
            "reason": reason,
            "hint": hint,
            "rate": None,
            "eta_s": None,
            "updated_at": None,
        }
    return out


#: Less free space than this beside the database, and a background embedder that stopped
#: is reported as stopped by a full disk (it cannot even record why when it is).
_LOW_SPACE = 16 << 20


def _free(library: Library) -> int | None:
    from assistant.storage.database import free_bytes

    return free_bytes(library.store.path.parent)


def _low(free: int | None) -> bool:
    return free is not None and free < _LOW_SPACE


def _why_stopped(free: int | None, reason: str) -> tuple[str, str]:
    """Why the background embedder stopped before it finished, and what to do about it.
    A full disk is named from the free space now (``free`` bytes): the process cannot
    record it itself."""
    from assistant.core.format import human_size

    if free is not None and free < _LOW_SPACE:
        return (
            f"the disk holding the database is full or nearly: {human_size(free)} free",
            "Free some disk space, then run `enclave docs sync` to carry on; search works meanwhile "
            "(keywords and cheap vectors).",
        )
    return (
        reason or "it stopped before it finished",
        "Run `enclave docs sync` to start it again; it carries on where it stopped.",
    )


def _count(db: Any, space: int) -> int:
    return int(db.execute("select count(*) from passage_vectors where space = ?", [space]).fetchone()[0])


def _alive(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


def _status(store: Store, state: str, rate: float | None, **detail: Any) -> None:
    detail.setdefault("pid", os.getpid())
    with store.transaction() as db:
        db.execute(
            "insert or replace into background_status (name, state, detail, rate, updated_at) values (?, ?, ?, ?, ?)",
            [STATUS_NAME, state, json.dumps(detail), rate, time.time()],
        )


# --------------------------------------------------------------------------- the process
def pending(library: Library) -> bool:
    """Whether there is background work: a passage without its MiniLM vector (when the
    embedder is installed) or an ANN index file to build or repair."""
    if library.index_dir is not None:
        from assistant.retrieval import ann, textindex

        spaces = [int(r[0]) for r in library.db.execute("select id from vector_spaces")]
        if any(ann.needs_build(library.db, library.index_dir, s) for s in spaces):
            return True
        if textindex.needs_build(library.db, library.index_dir):
            return True
    if not library.has_embedder:
        return False
    sha = library._embedder.sha256 if library._embedder is not None else library._embedder_sha256()
    space = find_space(library.db, sha) if sha else None
    if space is None:
        return library.db.execute("select 1 from chunks limit 1").fetchone() is not None
    row = library.db.execute(
        "select 1 from chunks c where not exists "
        "(select 1 from passage_vectors v where v.space = ? and v.chunk_id = c.id) limit 1",
        [space],
    ).fetchone()
    return row is not None


def start(settings: Settings, store: Store) -> bool:
    """Start the background embedder for ``store`` unless it runs already; returns whether
    a process was started. Turned off by ``ENCLAVE_DOCS_BACKGROUND=0`` (the tests' default
    is to fill vectors in-process with :meth:`Library.fill_vectors`)."""
    if os.environ.get("ENCLAVE_DOCS_BACKGROUND", "1") in ("0", "false", "no"):
        return False
    lock = run_dir(settings) / LOCK_FILE
    if _locked(lock):
        return False
    env = dict(os.environ)
    key = getattr(store, "key", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant.retrieval.backfill"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C in the terminal does not stop it; it stops itself when done
        close_fds=True,
    )
    assert proc.stdin is not None
    # The key (when the database is encrypted) goes over a pipe, never the command line.
    with contextlib.suppress(OSError):
        proc.stdin.write(json.dumps({"key": key.secret, "source": key.source} if key else {}).encode() + b"\n")
        proc.stdin.close()
    return True


def _locked(lock: Path) -> bool:
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken just now
    return False


def main() -> int:
    """The background process: fill every missing MiniLM vector, then exit."""
    import fcntl

    from assistant.core.errors import EnclaveError
    from assistant.core.settings import Settings
    from assistant.storage import crypt
    from assistant.storage.database import Store

    with contextlib.suppress(OSError, AttributeError):
        os.nice(19)
    line = sys.stdin.readline()
    secret = json.loads(line) if line.strip() else {}
    settings = Settings.load()
    lock_fd = os.open(run_dir(settings) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another one runs
    key = crypt.DatabaseKey(secret["key"], secret.get("source", "")) if secret.get("key") else None
    if key is None and settings.encrypt:
        key = crypt.key_for(settings.locations.database, True, interactive=False)
    try:
        store = Store(settings.locations.database, key)
    except EnclaveError:  # a full disk, a damaged file: `docs status` and the next command say which
        os.close(lock_fd)
        return 1
    try:
        _fill_and_index(settings, store)
        return 0
    except EnclaveError as exc:
        with contextlib.suppress(Exception):  # on a full disk this cannot be written either
            _status(store, "failed", None, reason=exc.message)
        return 1
    except (OSError, MemoryError) as exc:  # an index file that cannot be written, say
        with contextlib.suppress(Exception):
            _status(store, "failed", None, reason=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        store.close()
        os.close(lock_fd)


def _fill_and_index(settings: Settings, store: Store) -> None:
    """Fill the missing MiniLM vectors (pausing while a turn runs or on battery), then
    bring the search index files up to date; the status row says where it is."""
    # One inference thread: the other core stays free for whatever the user does next.
    from assistant.retrieval import open_library
    from assistant.retrieval.embed import load_embedder

    library = open_library(settings, store, load_embedder(replace(settings, threads=1)))
    embedder = library.embedder
    folder = run_dir(settings)
    filler = Backfill(library, embedder) if embedder is not None else None
    rate: float | None = None
    last = time.monotonic()
    written = [0.0]

    def should_wait() -> str | None:
        if busy(folder):
            return "a turn is generating"
        if not settings.docs_background_on_battery and on_battery():
            return "on battery (setting docs_background_on_battery)"
        return None

    def report(n: int) -> None:
        nonlocal rate, last
        now = time.monotonic()
        if n < 0:
            _status(store, "paused", rate, reason=should_wait() or "")
            last = now
            return
        instant = n / max(now - last, 1e-3)
        rate = instant if rate is None else rate + 0.2 * (instant - rate)
        last = now
        if now - written[0] >= STATUS_EVERY_S:  # not one more fsync per batch
            written[0] = now
            _status(store, "running", rate)

    _status(store, "running", None)
    if filler is not None:
        filler.run(should_wait=should_wait, report=report)
    if library.index_dir is not None:
        from assistant.retrieval import ann, textindex

        _status(store, "indexing", rate, reason="building the search index files")
        for line in ann.maintain(store, library.index_dir, threads=settings.threads):
            log.info(line)
        for line in textindex.maintain(store, library.index_dir, threads=settings.threads):
            log.info(line)
    _status(store, "done", rate)


if __name__ == "__main__":
    sys.exit(main())
