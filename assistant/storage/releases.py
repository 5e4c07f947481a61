"""Rows of the edge-operations tables (migration 4): model releases, the anti-rollback
counter, trusted signing keys, drift references, engine errors and benchmark results.

A repository over :class:`~assistant.storage.database.Store`: every write is one
transaction, every read returns records, never rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from assistant.storage.database import Store

ReleaseState = Literal["current", "previous", "retired"]
#: What an engine event is: a load that raised, a load that never finished (the
#: process died: counted at the next start), a failed turn, or a GPU that fell back to the CPU.
EngineEventKind = Literal["load_error", "crash", "turn_error", "gpu_fallback", "probe_failed"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Release:
    """One installed version of a model build."""

    id: int
    name: str
    engine: str
    version: int
    sha256: str
    signer: str
    released: str
    path: str
    installed_at: str
    state: ReleaseState
    load_attempts: int
    release: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Release:
        return cls(
            id=int(row["id"]),
            name=str(row["name"]),
            engine=str(row["engine"]),
            version=int(row["version"]),
            sha256=str(row["sha256"]),
            signer=str(row["signer"]),
            released=str(row["released"]),
            path=str(row["path"]),
            installed_at=str(row["installed_at"]),
            state=cast(ReleaseState, row["state"]),
            load_attempts=int(row["load_attempts"]),
            release=json.loads(row["release"]),
        )


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signatures `models install` accepts."""

    id: str
    name: str
    public_pem: str
    added_at: str


@dataclass(frozen=True)
class EngineEvent:
    """An engine failure kept for `enclave stats` and `enclave report` (no conversation text)."""

    id: int
    at: str
    model: str
    engine: str
    sha256: str
    kind: EngineEventKind
    message: str


@dataclass(frozen=True)
class BenchRun:
    """One `enclave bench` result."""

    at: str
    model: str
    engine: str
    sha256: str
    report: dict[str, Any]


class Releases:
    """The edge-operations tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self.store._lock:
            return list(self.store.db.query(sql, params or []))

    # -- releases
    def releases(self, name: str, engine: str) -> list[Release]:
        rows = self._query(
            "select * from model_releases where name = ? and engine = ? order by version desc", [name, engine]
        )
        return [Release.from_row(r) for r in rows]

    def all_releases(self) -> list[Release]:
        return [Release.from_row(r) for r in self._query("select * from model_releases order by name, engine, version")]

    def in_state(self, name: str, engine: str, state: ReleaseState) -> Release | None:
        found = [r for r in self.releases(name, engine) if r.state == state]
        return found[0] if found else None

    def highest(self, name: str, engine: str) -> int:
        """The highest version ever installed (0 when none): the anti-rollback counter."""
        rows = self._query("select highest from release_counters where name = ? and engine = ?", [name, engine])
        return int(rows[0]["highest"]) if rows else 0

    def add_release(
        self,
        *,
        name: str,
        engine: str,
        version: int,
        sha256: str,
        signer: str,
        released: str,
        path: str,
        release: dict[str, Any],
    ) -> int:
        """Record ``version`` as the new current release (the old current becomes previous,
        the old previous retired) and raise the counter, in one transaction."""
        with self.store.transaction() as db:
            db.execute(
                "update model_releases set state = 'retired' where name = ? and engine = ? and state = 'previous'",
                [name, engine],
            )
            db.execute(
                "update model_releases set state = 'previous' where name = ? and engine = ? and state = 'current'",
                [name, engine],
            )
            db.execute(
                "delete from model_releases where name = ? and engine = ? and version = ?", [name, engine, version]
            )
            cursor = db.execute(
                "insert into model_releases (name, engine, version, sha256, signer, released, path, installed_at, "
                "state, load_attempts, release) values (?, ?, ?, ?, ?, ?, ?, ?, 'current', 0, ?)",
                [name, engine, version, sha256, signer, released, path, _now(), json.dumps(release, sort_keys=True)],
            )
            db.execute(
                "insert into release_counters (name, engine, highest) values (?, ?, ?) "
                "on conflict (name, engine) do update set highest = max(highest, excluded.highest)",
                [name, engine, version],
            )
            return int(cursor.lastrowid or 0)

    def raise_counter(self, name: str, engine: str, version: int) -> None:
        """Make the counter at least ``version`` (used when the audit log knows a higher one)."""
        with self.store.transaction() as db:
            db.execute(
                "insert into release_counters (name, engine, highest) values (?, ?, ?) "
                "on conflict (name, engine) do update set highest = max(highest, excluded.highest)",
                [name, engine, version],
            )

    def swap_current_previous(self, name: str, engine: str) -> None:
        """Rollback: the previous release becomes current and the current one previous."""
        with self.store.transaction() as db:
            db.execute(
                "update model_releases set state = case state when 'current' then 'previous' else 'current' end, "
                "load_attempts = 0 where name = ? and engine = ? and state in ('current', 'previous')",
                [name, engine],
            )

    def set_attempts(self, release_id: int, attempts: int) -> None:
        with self.store.transaction() as db:
            db.execute("update model_releases set load_attempts = ? where id = ?", [attempts, release_id])

    # -- trusted keys
    def trusted_keys(self) -> list[TrustedKey]:
        return [
            TrustedKey(**r)
            for r in self._query("select id, name, public_pem, added_at from trusted_keys order by added_at")
        ]

    def trust(self, key_id: str, name: str, public_pem: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "insert or replace into trusted_keys (id, name, public_pem, added_at) values (?, ?, ?, ?)",
                [key_id, name, public_pem, _now()],
            )

    def untrust(self, key_id: str) -> bool:
        with self.store.transaction() as db:
            return int(db.execute("delete from trusted_keys where id = ?", [key_id]).rowcount or 0) > 0

    # -- drift references
    def drift_reference(
        self, name: str, engine: str, sha256: str, engine_build: str | None = None
    ) -> dict[str, Any] | None:
        """The stored golden figures of this model build; for ``engine_build`` None, the oldest one."""
        sql = "select * from drift_references where name = ? and engine = ? and sha256 = ?"
        params: list[Any] = [name, engine, sha256]
        if engine_build is not None:
            sql += " and engine_build = ?"
            params.append(engine_build)
        rows = self._query(sql + " order by created_at limit 1", params)
        if not rows:
            return None
        figures: dict[str, Any] = json.loads(rows[0]["figures"])
        figures["origin"] = rows[0]["origin"]
        figures["created_at"] = rows[0]["created_at"]
        return figures

    def save_drift_reference(
        self, name: str, engine: str, sha256: str, engine_build: str, origin: str, figures: dict[str, Any]
    ) -> None:
        """Keep the first figures of a build: a reference is never overwritten."""
        with self.store.transaction() as db:
            db.execute(
                "insert or ignore into drift_references (name, engine, sha256, engine_build, created_at, origin, figures) "
                "values (?, ?, ?, ?, ?, ?, ?)",
                [name, engine, sha256, engine_build, _now(), origin, json.dumps(figures, sort_keys=True)],
            )

    # -- engine events
    def record_event(self, model: str, engine: str, sha256: str, kind: EngineEventKind, message: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "insert into engine_events (at, model, engine, sha256, kind, message) values (?, ?, ?, ?, ?, ?)",
                [_now(), model, engine, sha256, kind, message[:500]],
            )

    def events(self, limit: int = 100) -> list[EngineEvent]:
        rows = self._query("select * from engine_events order by id desc limit ?", [limit])
        return [EngineEvent(**r) for r in rows]

    # -- bench runs
    def save_bench(self, report: dict[str, Any]) -> None:
        with self.store.transaction() as db:
            db.execute(
                "insert into bench_runs (at, model, engine, sha256, report) values (?, ?, ?, ?, ?)",
                [_now(), report["model"], report["engine"], report.get("model_sha256", ""), json.dumps(report)],
            )

    def last_bench(self, model: str, engine: str) -> BenchRun | None:
        rows = self._query(
            "select * from bench_runs where model = ? and engine = ? order by id desc limit 1", [model, engine]
        )
        if not rows:
            return None
        r = rows[0]
        return BenchRun(
            at=r["at"], model=r["model"], engine=r["engine"], sha256=r["sha256"], report=json.loads(r["report"])
        )
