"""Encryption at rest on real SQLCipher files: keys, errors, conversion in place, leftovers.

(Every test of tests/unit/test_store.py also runs on an encrypted store.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from assistant.core.settings import Settings, write_setting
from assistant.storage import crypt
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from tests.keyring_backend import FileKeyring

KEY = crypt.DatabaseKey('it\'s a "quoted" pass; phrase -- ünïcode', "the test")
CANARY = "quokkacanary5172"


def _fill(store: Store, text: str = CANARY, turns: int = 3) -> int:
    cid = store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="s", context_policy="drop-oldest"
    )
    for i in range(turns):
        store.add_turn(
            cid, f"{text} question {i}", f"answer {i}", model="tiny", model_sha256="0" * 64, engine="onnx",
            where_ran="local", finish_reason="stop", usage=None, context=None,
        )  # fmt: skip
    return cid


def _hits(folder: Path, text: str = CANARY) -> list[str]:
    needles = [text.encode(), text.encode("utf-16-le"), text.encode("utf-16-be")]
    return [p.name for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "enclave.db"


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileKeyring]:
    monkeypatch.setenv("ENCLAVE_TEST_KEYRING", str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    backend = FileKeyring()  # type: ignore[no-untyped-call]  # keyring is untyped
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypt.KEY_ENV, raising=False)


# --------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    "secret", ["plain", "o'neil", "a''b'", '"; drop table x; --', "ünï ☃", "x'not-hex'", "x'" + "ab" * 32 + "'"]
)
def test_any_passphrase_is_quoted_and_reopens(db: Path, secret: str) -> None:
    key = crypt.DatabaseKey(secret, "the test")
    store = Store(db, key)
    _fill(store)
    store.close()
    assert crypt.file_state(db) == "encrypted"
    again = Store(db, key)
    assert again.search(CANARY)
    again.close()


def test_empty_and_nul_keys_are_refused() -> None:
    with pytest.raises(crypt.EncryptionError, match="empty"):
        crypt.key_statement("")
    with pytest.raises(crypt.EncryptionError, match="NUL"):
        crypt.key_statement("a\x00b")


def test_the_key_never_shows_in_its_repr() -> None:
    assert KEY.secret not in repr(KEY) and "the test" in repr(KEY)


def test_key_order_env_then_keyring(db: Path, monkeypatch: pytest.MonkeyPatch, file_keyring: FileKeyring) -> None:
    assert crypt.find_key(db, interactive=False) is None
    crypt.store_in_keyring(db, KEY)
    found = crypt.find_key(db, interactive=False)
    assert found is not None and found.secret == KEY.secret and found.source == "the system keyring"
    monkeypatch.setenv(crypt.KEY_ENV, "from env")
    found = crypt.find_key(db, interactive=False)
    assert found is not None and found.secret == "from env" and found.source == crypt.KEY_ENV
    crypt.forget_keyring_key(db)
    monkeypatch.delenv(crypt.KEY_ENV)
    assert crypt.find_key(db, interactive=False) is None


def test_no_keyring_backend_is_said_plainly(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring is untyped
    try:
        assert crypt.keyring_backend() is None
        assert crypt.key_from_keyring(db) is None
        with pytest.raises(crypt.EncryptionError) as info:
            crypt.store_in_keyring(db, KEY)
    finally:
        keyring.set_keyring(previous)
    assert "no system keyring" in info.value.message and crypt.KEY_ENV in info.value.hint


# --------------------------------------------------------------------------- the encrypted store
def test_encrypted_store_keeps_nothing_readable_on_disk(db: Path) -> None:
    store = Store(db, KEY)
    assert store.db.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY: no plaintext temp files
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cid = _fill(store, turns=20)
    # A sort big enough to need a temporary b-tree, while the WAL still holds the pages.
    store.db.execute("select content from messages order by content desc").fetchall()
    assert (db.parent / "enclave.db-wal").stat().st_size > 0
    assert _hits(db.parent) == []
    assert store.search(CANARY)[0]["conversation_id"] == cid
    store.close()
    assert _hits(db.parent) == []
    with sqlite3.connect(db) as plain, pytest.raises(sqlite3.DatabaseError, match="not a database"):
        plain.execute("select * from messages").fetchall()


def test_plaintext_store_does_show_the_canary(db: Path) -> None:
    """The scan above can fail: the same writes without a key are readable."""
    store = Store(db)
    _fill(store)
    assert _hits(db.parent)
    store.close()


def test_audit_chain_in_an_encrypted_database(db: Path) -> None:
    log = AuditLog(Store(db, KEY))
    for i in range(3):
        log.record("export", conversation=i)
    assert log.verify() == []
    conn = crypt.connect(db, KEY)
    with pytest.raises(crypt.INTEGRITY_ERRORS, match="append-only"):
        conn.execute("update audit set detail = '{}' where seq = 2")
    conn.close()
    log.store.close()


def test_wrong_and_missing_keys_are_one_clear_sentence(db: Path) -> None:
    Store(db, KEY).close()
    with pytest.raises(crypt.EncryptionError) as wrong:
        Store(db, crypt.DatabaseKey("wrong", crypt.KEY_ENV))
    assert wrong.value.message == f"The database {db} is encrypted and the key from ENCLAVE_DB_KEY is wrong."
    assert crypt.KEY_ENV in wrong.value.hint
    with pytest.raises(crypt.EncryptionError) as missing:
        Store(db)  # as plain sqlite3 opens it: "file is not a database"
    assert missing.value.message == f"The database {db} is encrypted and no key was found."


def test_settings_and_file_must_agree(db: Path, enclave_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load()
    db = settings.locations.database
    Store.open(settings).close()  # plaintext
    with pytest.raises(crypt.EncryptionError, match="not encrypted, but the setting encrypt is on") as info:
        Store.open(Settings.load(encrypt=True), interactive=False)
    assert "enclave init --encrypt" in info.value.hint
    crypt.encrypt_in_place(db, KEY)
    with pytest.raises(crypt.EncryptionError, match="is encrypted, but the setting encrypt is off"):
        Store.open(settings)
    with pytest.raises(crypt.EncryptionError, match="no key was found"):
        Store.open(Settings.load(encrypt=True), interactive=False)
    monkeypatch.setenv(crypt.KEY_ENV, KEY.secret)
    Store.open(Settings.load(encrypt=True)).close()


# --------------------------------------------------------------------------- conversion
def test_encrypt_in_place_keeps_every_row_and_leaves_no_plaintext(db: Path) -> None:
    store = Store(db)
    cid = _fill(store, turns=50)
    log = AuditLog(store)
    log.record("export", conversation=cid)
    version = store.version
    store.close()
    assert _hits(db.parent)
    crypt.encrypt_in_place(db, KEY)
    assert crypt.file_state(db) == "encrypted"
    assert sorted(p.name for p in db.parent.iterdir()) == ["audit.head", "enclave.db", "enclave.db.lock"]
    assert _hits(db.parent) == []
    again = Store(db, KEY)
    assert again.version == version
    assert len(again.messages(cid)) == 100
    assert {h["conversation_id"] for h in again.search(CANARY)} == {cid}  # the FTS index came along
    assert AuditLog(again).verify() == []
    again.close()


def test_plaintext_left_in_the_wal_is_overwritten(db: Path) -> None:
    """A killed Enclave leaves turns in the -wal; converting zeroes those frames before unlinking."""
    writer = (
        "import sys, time; from pathlib import Path; from assistant.storage.database import Store; "
        "from tests.unit.test_crypt import _fill; s = Store(Path(sys.argv[1])); "
        "s.db.execute('PRAGMA wal_autocheckpoint = 0'); _fill(s); print('ok', flush=True); time.sleep(60)"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", writer, str(db)], stdout=subprocess.PIPE, text=True, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
    proc.kill()
    proc.wait()
    wal = db.with_name("enclave.db-wal")
    with wal.open("rb") as old_wal:  # the same inode, readable after the unlink
        assert CANARY.encode() in old_wal.read()
        crypt.encrypt_in_place(db, KEY)
        assert not wal.exists() and not db.with_name("enclave.db-shm").exists()
        old_wal.seek(0)
        assert CANARY.encode() not in old_wal.read()
    again = Store(db, KEY)
    assert len(again.search(CANARY)) == 3  # the WAL's turns were folded in first
    again.close()


def test_decrypt_in_place_is_the_reverse(db: Path) -> None:
    store = Store(db, KEY)
    cid = _fill(store, turns=10)
    store.close()
    crypt.decrypt_in_place(db, KEY)
    assert crypt.file_state(db) == "plain"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from messages where conversation_id = ?", [cid]).fetchone()[0] == 20
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_decrypt_with_a_wrong_key_changes_nothing(db: Path) -> None:
    Store(db, KEY).close()
    before = db.read_bytes()
    with pytest.raises(crypt.EncryptionError, match="wrong"):
        crypt.decrypt_in_place(db, crypt.DatabaseKey("nope", "the test"))
    assert db.read_bytes() == before


def test_conversion_waits_for_no_one_else_using_the_database(db: Path) -> None:
    other = Store(db)  # another Enclave process would hold the same shared lock
    _fill(other)
    with pytest.raises(crypt.EncryptionError, match="in use by another Enclave process"):
        crypt.encrypt_in_place(db, KEY)
    assert crypt.file_state(db) == "plain"
    other.close()
    crypt.encrypt_in_place(db, KEY)
    assert crypt.file_state(db) == "encrypted"


def test_leftovers_of_an_interrupted_conversion_are_finished(db: Path) -> None:
    store = Store(db)
    _fill(store)
    store.close()
    # Killed after the hard link, before the rename: the "old" name is the live database.
    os.link(db, db.with_name("enclave.db.plaintext-old"))
    db.with_name("enclave.db.converting").write_bytes(b"half a copy " + CANARY.encode())
    assert crypt.remove_leftovers(db)
    assert sorted(p.name for p in db.parent.iterdir()) == ["enclave.db", "enclave.db.lock"]
    assert Store(db).search(CANARY)  # the live database was only unlinked from, not shredded
    # Killed after the rename: the old name is the replaced plaintext, now shredded.
    old = db.with_name("enclave.db.plaintext-old")
    old.write_bytes(b"old plaintext " + CANARY.encode())
    with old.open("rb") as handle:
        crypt.remove_leftovers(db)
        assert CANARY.encode() not in handle.read()  # same inode: overwritten before unlink
    assert not old.exists()


def test_a_damaged_file_is_not_called_encrypted(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\0" * 8192)
    assert crypt.file_state(db) == "damaged"
    db.write_bytes(os.urandom(8192))
    assert crypt.file_state(db) == "encrypted"


# --------------------------------------------------------------------------- settings file
def test_write_setting_keeps_the_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# my settings\nmodel = "tiny"  # the small one\nencrypt = false\n\ntheme = "nord"\n')
    write_setting(path, "encrypt", True)
    assert path.read_text() == '# my settings\nmodel = "tiny"  # the small one\nencrypt = true\n\ntheme = "nord"\n'
    write_setting(path, "persona", 'le"gal')
    assert path.read_text().endswith('persona = "le\\"gal"\n')
    write_setting(tmp_path / "new" / "config.toml", "encrypt", True)
    assert (tmp_path / "new" / "config.toml").read_text() == "encrypt = true\n"
