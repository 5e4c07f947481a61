"""An append-only, keyed, hash-chained audit log that a compliance review can check.

Three things together make the log hard to rewrite unnoticed:

1. **The chain.** Each entry's ``hash`` (SHA-256) covers its sequence number, time,
   kind, details and the hash of the entry before it, so editing, removing or
   reordering any entry breaks the chain. SQLite triggers refuse UPDATE and DELETE.
2. **The key.** Each entry also carries ``mac``, an HMAC-SHA256 of the same fields
   under a 256-bit key that is *not* in the database: in the system keyring
   (service ``enclave-audit``, user = the chain's id) when the machine has one, else in
   ``<config>/audit.key`` (0600). Someone holding only the data directory — a copied
   disk, a restored backup, a synced folder — can recompute SHA-256 hashes but not
   the MACs, so an edited, forged or re-hashed entry fails ``audit verify``.
   The key is random rather than derived from the SQLCipher passphrase: the same
   mechanism then covers plaintext and encrypted databases, survives
   ``init --encrypt``/``--decrypt`` (which would otherwise change the key
   mid-chain), and does not depend on ``ENCLAVE_DB_KEY`` being set when the log is
   checked.
3. **Two counters.** ``<data>/audit.head`` (sequence number, hash, MAC of the newest
   entry) catches the newest entries being cut off; ``<config>/audit-state.json``
   records the same outside the data directory, so that copying an older data
   directory back — database and head together, encrypted or not — is caught too:
   the counter has moved past the database.

Both counters are written *after* the commit and only ever name committed entries:
a writer renames its new head into place, then re-reads the newest entry and writes
again until they agree, so concurrent writers converge on the newest entry and a
kill between commit and head leaves the database one entry *ahead* of the counters —
which the MACs prove genuine — never behind (behind is exactly what deleting the
newest entry looks like). Temporary files are unique per process and call.

What this cannot detect (the README says so too): someone who can read the key (the
same user account: the key file, or an unlocked keyring) can write a consistent
forgery; rolling the *whole* home back (data and config directories, and the keyring
entry with them) is indistinguishable from going back in time; and the log covers
audited events, not every stored turn.

Databases from before keying verify as they always did (SHA-256 chain and head);
the first keyed entry's MAC covers the hash of the last unkeyed one, which seals
them, and the counter file records the entry keying started from.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from assistant.core.errors import EnclaveError
from assistant.core.files import create_private, private_dir, replace_atomically
from assistant.storage.database import Store

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KEYRING_SERVICE = "enclave-audit"
HEAD_NAME = "audit.head"
STATE_NAME = "audit-state.json"
KEY_NAME = "audit.key"
#: A writer re-reads the newest entry after writing the counters this many times at
#: most; two writers converge in two rounds, and a third round has never been needed.
_CONVERGE_ROUNDS = 8

KeyPlace = Literal["keyring", "file"]


class AuditError(EnclaveError):
    """The audit log cannot be appended to or checked (its key or counter is missing or damaged)."""


def _digest(seq: int, at: str, kind: str, detail: str, prev: str) -> str:
    return hashlib.sha256(f"{seq}\x1f{at}\x1f{kind}\x1f{detail}\x1f{prev}".encode()).hexdigest()


def _mac(key: bytes, *parts: object) -> str:
    return hmac.new(key, "\x1f".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


def entry_mac(key: bytes, seq: int, at: str, kind: str, detail: str, prev: str) -> str:
    """The HMAC that proves an entry was written by someone holding the audit key."""
    return _mac(key, "entry", seq, at, kind, detail, prev)


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.what}"


@dataclass(frozen=True)
class Head:
    """What ``audit.head`` says: the newest committed entry (``mac`` is None in unkeyed heads)."""

    seq: int
    hash: str
    mac: str | None = None

    @classmethod
    def parse(cls, text: str) -> Head:
        """Raises ValueError for anything but ``SEQ HASH [MAC]``."""
        parts = text.split()
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not _is_hex(parts[1], 64):
            raise ValueError("it is not 'sequence hash [mac]'")
        mac = parts[2] if len(parts) == 3 else None
        if mac is not None and not _is_hex(mac, 64):
            raise ValueError("its MAC is not 64 hex digits")
        return cls(int(parts[0]), parts[1], mac)

    def text(self) -> str:
        return f"{self.seq} {self.hash}" + (f" {self.mac}" if self.mac else "") + "\n"


@dataclass(frozen=True)
class AuditState:
    """The counter outside the data directory (``<config>/audit-state.json``)."""

    chain: str  #: random id of this chain (the keyring user name of its key)
    key: KeyPlace  #: where the key lives
    keyed_from: int  #: first entry that carries a MAC (earlier ones predate keying)
    seq: int  #: the newest entry seen committed
    hash: str
    mac: str

    def signed(self, key: bytes) -> AuditState:
        return AuditState(self.chain, self.key, self.keyed_from, self.seq, self.hash, self._expected(key))

    def _expected(self, key: bytes) -> str:
        return _mac(key, "state", self.chain, self.key, self.keyed_from, self.seq, self.hash)

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, self._expected(key))

    def text(self) -> str:
        data = {
            "chain": self.chain,
            "key": self.key,
            "keyed_from": self.keyed_from,
            "seq": self.seq,
            "hash": self.hash,
            "mac": self.mac,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str) -> AuditState:
        """Raises ValueError for anything but a well-formed state."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        chain, key, keyed_from = data.get("chain"), data.get("key"), data.get("keyed_from")
        seq, digest, mac = data.get("seq"), data.get("hash"), data.get("mac")
        if not (isinstance(chain, str) and _is_hex(chain, 32)):
            raise ValueError("its chain id is not 32 hex digits")
        if key not in ("keyring", "file"):
            raise ValueError("it does not say where the key is")
        if not (_count(keyed_from) and _count(seq)):
            raise ValueError("its counters are not whole numbers")
        assert isinstance(keyed_from, int) and isinstance(seq, int)
        if not (isinstance(digest, str) and _is_hex(digest, 64) and isinstance(mac, str) and _is_hex(mac, 64)):
            raise ValueError("its hash or MAC is not 64 hex digits")
        return cls(chain, key, keyed_from, seq, digest, mac)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class Verdict:
    """The result of checking the log: problems (empty when intact) and how it is protected."""

    problems: list[Problem]
    entries: int
    keyed_from: int | None  #: None: no entry is keyed yet
    key: KeyPlace | None
    counter: int | None  #: the counter outside the data directory

    @property
    def protection(self) -> str:
        if self.keyed_from is None or self.key is None:
            return "unkeyed (SHA-256 chain and head only; the next entry starts the keyed chain)"
        where = "the system keyring" if self.key == "keyring" else KEY_NAME + " in the config directory"
        since = "every entry" if self.keyed_from <= 1 else f"entries {self.keyed_from}+ (earlier ones sealed by them)"
        return f"keyed with HMAC-SHA256 ({where}) for {since}; counter at {self.counter} outside the data directory"


class AuditLog:
    """The audit table in Enclave's database, its head file and its key and counter."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.head_path = store.path.with_name(HEAD_NAME)
        config = store.config_dir
        if config is None:
            from assistant.core.settings import Locations

            config = Locations.from_env().config
        self.config_dir = config
        self.state_path = config / STATE_NAME
        self.key_path = config / KEY_NAME

    # ------------------------------------------------------------------ writing
    def record(self, kind: str, **detail: Any) -> int:
        """Append one entry; returns its sequence number."""
        text = json.dumps(detail, sort_keys=True, ensure_ascii=False, default=str)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.store.transaction() as db:
            row = db.execute("select seq, hash from audit order by seq desc limit 1").fetchone()
            seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, GENESIS)
            # Under the write lock: one process creates the key, the others then find it.
            state, key = self._state_for_append(seq - 1, prev)
            digest = _digest(seq, at, kind, text, prev)
            db.execute(
                "insert into audit (seq, at, kind, detail, prev, hash, mac) values (?, ?, ?, ?, ?, ?, ?)",
                [seq, at, kind, text, prev, digest, entry_mac(key, seq, at, kind, text, prev)],
            )
        self._advance(state, key)
        return int(seq)

    def _state_for_append(self, last_seq: int, last_hash: str) -> tuple[AuditState, bytes]:
        """The counter and the key, created with the first keyed entry."""
        state = self._read_state_or_fail()
        if state is None:
            key = self._file_key()  # a counter deleted but its key left: the MACs can still be checked
        else:
            key = self._key(state)
            if key is None:
                raise self._key_missing(state)
            return state, key
        if self._has_keyed_entries():
            raise AuditError(
                f"The audit log's counter {self.state_path} is missing, so the keyed chain cannot continue.",
                "Restore it from a backup of the config directory. `enclave audit verify` shows the damage.",
            )
        chain = secrets.token_hex(16)
        key, place = self._new_key(chain)
        state = AuditState(chain, place, last_seq + 1, last_seq, last_hash, "").signed(key)
        self._write_state(state)
        return state, key

    def _has_keyed_entries(self) -> bool:
        row = self.store.db.execute("select count(*) from audit where mac is not null").fetchone()
        return bool(row[0])

    def _advance(self, state: AuditState, key: bytes) -> None:
        """Point the head and the counter at the newest committed entry (see the module docstring)."""
        written: tuple[int, str] | None = None
        for _ in range(_CONVERGE_ROUNDS):
            with self.store._lock:
                row = self.store.db.execute("select seq, hash from audit order by seq desc limit 1").fetchone()
            if row is None:
                return
            newest = (int(row[0]), str(row[1]))
            if newest == written:
                return
            seq, digest = newest
            try:
                replace_atomically(self.head_path, Head(seq, digest, _mac(key, "head", seq, digest)).text().encode())
                self._write_state(AuditState(state.chain, state.key, state.keyed_from, seq, digest, "").signed(key))
            except OSError as exc:
                # The entry is committed and keyed; a counter that lags behind is not damage.
                log.warning("could not update the audit counters: %s", exc)
                return
            written = newest

    # ------------------------------------------------------------------ key and counter
    def _read_state(self) -> AuditState | None:
        """The counter, None when there is none; raises ValueError/OSError when it is unreadable."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return AuditState.parse(text)

    def _read_state_or_fail(self) -> AuditState | None:
        try:
            return self._read_state()
        except (OSError, ValueError) as exc:
            raise AuditError(
                f"The audit log's counter {self.state_path} is damaged ({exc}).",
                "Restore it from a backup of the config directory; `enclave audit verify` shows the state of the log.",
            ) from exc

    def _write_state(self, state: AuditState) -> None:
        private_dir(self.config_dir)
        replace_atomically(self.state_path, state.text().encode())

    def _key(self, state: AuditState) -> bytes | None:
        if state.key == "file":
            return self._file_key()
        secret = _keyring_get(state.chain)
        return bytes.fromhex(secret) if secret and _is_hex(secret, 64) else None

    def _file_key(self) -> bytes | None:
        try:
            secret = self.key_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return bytes.fromhex(secret) if _is_hex(secret, 64) else None

    def _key_missing(self, state: AuditState) -> AuditError:
        if state.key == "keyring":
            return AuditError(
                "The audit log's key is kept in the system keyring, which cannot be read now.",
                "Unlock the keyring (log in to the desktop session) and run the command again.",
            )
        return AuditError(
            f"The audit log's key {self.key_path} is missing or damaged, so the log cannot be extended.",
            f"Restore it from a backup of the config directory. To start a new chain on purpose, move "
            f"{self.state_path} away as well (earlier entries can then no longer be checked).",
        )

    def _new_key(self, chain: str) -> tuple[bytes, KeyPlace]:
        """A fresh random key: in the system keyring when there is one, else a 0600 file."""
        existing = self._file_key()
        if existing is not None:  # left by a first append that stopped before its counter
            return existing, "file"
        key = secrets.token_bytes(32)
        if _keyring_set(chain, key.hex()):
            return key, "keyring"
        private_dir(self.config_dir)
        create_private(self.key_path)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, (key.hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return key, "file"

    # ------------------------------------------------------------------ reading
    def entries(self) -> list[dict[str, Any]]:
        with self.store._lock:
            return list(self.store.db.query("select * from audit order by rowid"))

    def verify(self) -> list[Problem]:
        """Every problem with the log; empty when intact."""
        return self.check().problems

    def check(self) -> Verdict:
        """Check the chain, the MACs, the head and the counter (see the module docstring)."""
        problems: list[Problem] = []
        rows = self.entries()
        state: AuditState | None = None
        key: bytes | None = None
        try:
            state = self._read_state()
        except (OSError, ValueError) as exc:
            problems.append(Problem(0, f"the audit counter {self.state_path} is unreadable ({exc})"))
        if state is None:
            key = self._file_key()  # a counter deleted but its key left: the MACs can still be checked
        else:
            key = self._key(state)
            if key is None:
                problems.append(Problem(state.keyed_from, f"cannot be checked: {self._key_missing(state).message}"))
            elif not state.valid(key):
                problems.append(
                    Problem(state.seq, f"the audit counter {self.state_path} was edited (its MAC is wrong)")
                )
        problems += self._check_chain(rows, state, key)
        by_seq = {int(r["seq"]): r for r in rows}
        last_seq = int(rows[-1]["seq"]) if rows else 0
        problems += self._check_head(by_seq, last_seq, state, key)
        if state is not None and (key is None or state.valid(key)):
            problems += self._check_counter(state, by_seq, last_seq)
        keyed = [int(r["seq"]) for r in rows if r.get("mac")]
        if keyed and state is None and not any("unreadable" in p.what for p in problems):
            problems.append(
                Problem(keyed[0], f"the audit counter {self.state_path} is missing (deleted, or the config "
                        "directory was replaced), so removed entries and rolled-back copies cannot be ruled out")
            )  # fmt: skip
        keyed_from = state.keyed_from if state is not None else (keyed[0] if keyed else None)
        return Verdict(problems, len(rows), keyed_from, state.key if state else None, state.seq if state else None)

    def _check_chain(self, rows: list[dict[str, Any]], state: AuditState | None, key: bytes | None) -> list[Problem]:
        problems: list[Problem] = []
        prev_hash = GENESIS
        expected = 1
        keyed_seen = False
        for row in rows:
            seq = int(row["seq"])
            if seq != expected:
                if seq > expected:
                    missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
                    problems.append(Problem(seq, f"entries {missing} are missing before it"))
                else:
                    problems.append(Problem(seq, "is out of order"))
            if row["prev"] != prev_hash:
                problems.append(Problem(seq, "does not follow the entry before it (removed or reordered entries)"))
            if _digest(seq, row["at"], row["kind"], row["detail"], row["prev"]) != row["hash"]:
                problems.append(Problem(seq, "was edited after it was written (hash mismatch)"))
            mac = row.get("mac")
            if mac:
                keyed_seen = True
                if key is not None:
                    want = entry_mac(key, seq, row["at"], row["kind"], row["detail"], row["prev"])
                    if not hmac.compare_digest(str(mac), want):
                        problems.append(Problem(seq, "was forged or rewritten: its MAC does not match the audit key"))
            elif keyed_seen or (state is not None and seq >= state.keyed_from):
                problems.append(
                    Problem(seq, "has no MAC although the log is keyed from entry "
                            f"{state.keyed_from if state else '?'} on (forged, or its MAC was removed)")
                )  # fmt: skip
            prev_hash = row["hash"]
            expected = seq + 1
        return problems

    def _check_head(
        self, by_seq: dict[int, dict[str, Any]], last_seq: int, state: AuditState | None, key: bytes | None
    ) -> list[Problem]:
        try:
            text = self.head_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [Problem(last_seq, f"the head file {HEAD_NAME} is missing")] if by_seq else []
        except (OSError, UnicodeDecodeError) as exc:
            return [Problem(last_seq, f"the head file {HEAD_NAME} is unreadable ({exc})")]
        try:
            head = Head.parse(text)
        except ValueError as exc:
            return [Problem(last_seq, f"the head file {HEAD_NAME} is damaged ({exc})")]
        if head.mac is not None and key is not None:
            if not hmac.compare_digest(head.mac, _mac(key, "head", head.seq, head.hash)):
                return [Problem(head.seq, f"the head file {HEAD_NAME} was rewritten (its MAC does not match)")]
        elif head.mac is None and state is not None and head.seq >= state.keyed_from:
            return [Problem(head.seq, f"the head file {HEAD_NAME} names a keyed entry but is not signed (rewritten)")]
        if head.seq > last_seq:
            return [Problem(last_seq + 1, f"entries {last_seq + 1}–{head.seq} were removed from the end")]
        if head.seq and by_seq.get(head.seq, {}).get("hash") != head.hash:
            return [Problem(head.seq, "the head file does not match the entry it names")]
        return []

    def _check_counter(self, state: AuditState, by_seq: dict[int, dict[str, Any]], last_seq: int) -> list[Problem]:
        if state.seq > last_seq:
            return [
                Problem(
                    last_seq + 1,
                    f"the database holds {last_seq} entries but the counter outside the data directory "
                    f"({self.state_path}) reached {state.seq}: entries were removed, the log was wiped, or an "
                    "older copy of the database was put back",
                )
            ]
        if state.seq and by_seq.get(state.seq, {}).get("hash") != state.hash:
            return [
                Problem(
                    state.seq,
                    "differs from the entry the counter outside the data directory recorded: "
                    "the database was replaced by another copy",
                )
            ]
        return []

    def export(self) -> str:
        """JSON Lines, one entry per line, with the hashes and MACs, for an external review."""
        return "\n".join(json.dumps(row, ensure_ascii=False) for row in self.entries())


# --------------------------------------------------------------------------- keyring
def _keyring_get(chain: str) -> str | None:
    from assistant.storage.crypt import keyring_backend

    if keyring_backend() is None:
        return None
    try:
        import keyring

        value = keyring.get_password(KEYRING_SERVICE, chain)
    except Exception as exc:  # noqa: BLE001 - a locked or broken keyring is "no key here"
        log.debug("keyring lookup failed: %s", exc)
        return None
    return str(value) if value else None


def _keyring_set(chain: str, secret: str) -> bool:
    from assistant.storage.crypt import keyring_backend

    if keyring_backend() is None:
        return False
    with contextlib.suppress(Exception):
        import keyring

        keyring.set_password(KEYRING_SERVICE, chain, secret)
        return keyring.get_password(KEYRING_SERVICE, chain) == secret
    return False
