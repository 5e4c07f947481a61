"""The store on real SQLite files: round trips, search, delete, export, migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from assistant.core.errors import EnclaveError
from assistant.storage import crypt
from assistant.storage.database import MIGRATIONS, Store

#: Every store test runs on a plaintext and on a SQLCipher-encrypted database.
KEY = crypt.DatabaseKey("correct horse battery staple", "the test")


def _turn(store: Store, cid: int, user: str, answer: str, **extra: object) -> tuple[int, int]:
    fields: dict[str, Any] = dict(
        model="tiny",
        model_sha256="ab" * 32,
        engine="onnx",
        where_ran="local",
        finish_reason="stop",
        usage={"prompt_tokens": 10, "prefilled_tokens": 10, "completion_tokens": 3},
        context={"window": 512, "used": 10, "reserved_for_answer": 64, "dropped_turns": 0, "drops": []},
    )
    fields.update(extra)
    return store.add_turn(cid, user, answer, **fields)


@pytest.fixture(params=["plaintext", "encrypted"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    return Store(tmp_path / "enclave.db", KEY if request.param == "encrypted" else None)


def _connect(store: Store) -> sqlite3.Connection:
    """A second, independent connection to the store's file (with its key when encrypted)."""
    return crypt.connect(store.path, KEY if store.encrypted else None)  # type: ignore[no-any-return]


def _new(store: Store) -> int:
    return store.create_conversation(
        model="tiny", engine="onnx", persona="general", system_prompt="sys", context_policy="drop-oldest"
    )


def test_database_settings_and_schema_version(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.version == len(MIGRATIONS)
    # Re-opening migrates nothing and loses nothing.
    cid = _new(store)
    _turn(store, cid, "hello", "hi")
    store.close()
    again = Store(store.path, KEY if store.encrypted else None)
    assert again.version == len(MIGRATIONS)
    assert [m.content for m in again.messages(cid)] == ["hello", "hi"]


def test_round_trip_keeps_every_field(store: Store) -> None:
    cid = _new(store)
    _turn(store, cid, "What is the pressure?", "About 3 bar.")
    _turn(store, cid, "And the flow?", "20 l/min.", finish_reason="length")
    messages = store.messages(cid)
    assert [(m.seq, m.role, m.content) for m in messages] == [
        (0, "user", "What is the pressure?"),
        (1, "assistant", "About 3 bar."),
        (2, "user", "And the flow?"),
        (3, "assistant", "20 l/min."),
    ]
    answer = messages[3]
    assert answer.model == "tiny" and answer.engine == "onnx" and answer.where_ran == "local"
    assert answer.model_sha256 == "ab" * 32 and answer.finish_reason == "length"
    assert answer.usage == {"prompt_tokens": 10, "prefilled_tokens": 10, "completion_tokens": 3}
    assert answer.created_at.endswith("Z")
    assert store.conversation(cid)["title"] == "What is the pressure?"


def test_drops_are_recorded_as_context_events(store: Store) -> None:
    cid = _new(store)
    drop = {"kind": "turn", "index": 2, "tokens": 40, "preview": "old question"}
    _turn(
        store,
        cid,
        "q",
        "a",
        context={"window": 64, "used": 50, "reserved_for_answer": 8, "dropped_turns": 1, "drops": [drop]},
    )
    events = store.context_events(cid)
    assert len(events) == 1 and json.loads(events[0]["detail"]) == drop


def test_full_text_search_finds_words_and_stems(store: Store) -> None:
    a, b = _new(store), _new(store)
    _turn(store, a, "The impeller is cracked", "Replace the impeller.")
    _turn(store, b, "Termination clause?", "Either party may terminate with notice.")
    hits = store.search("impeller")
    assert {h["conversation_id"] for h in hits} == {a}
    assert "[impeller]" in hits[0]["snippet"]
    assert {h["conversation_id"] for h in store.search("terminating")} == {b}  # porter stemming
    assert store.search('"unbalanced quote') == []  # user text is quoted, never FTS syntax


def test_delete_really_deletes_messages_and_index_rows(store: Store) -> None:
    cid = _new(store)
    _turn(store, cid, "secret canary 7f3a", "noted")
    keep = _new(store)
    _turn(store, keep, "other", "fine")
    store.delete(cid)
    assert store.search("canary") == []
    assert store.db.execute("select count(*) from messages where conversation_id = ?", [cid]).fetchone()[0] == 0
    fts_rows = store.db.execute("select count(*) from messages_fts where messages_fts match 'canary'").fetchone()[0]
    assert fts_rows == 0
    with pytest.raises(EnclaveError):
        store.conversation(cid)
    assert [m.content for m in store.messages(keep)] == ["other", "fine"]


def test_a_deleted_conversations_id_is_never_given_again(store: Store) -> None:
    first, newest = _new(store), _new(store)
    store.delete(newest)
    again = _new(store)
    assert again > newest > first
    # Nothing can slip a reused id in behind the store's back.
    with pytest.raises(crypt.INTEGRITY_ERRORS, match="conversation ids must increase"):
        store.db.execute(
            "insert into conversations (id, title, created_at, updated_at) values (?, '', '', '')", [newest]
        )


def test_a_database_from_before_the_id_counter_keeps_counting_up(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    old = Store(path)
    ids = [_new(old) for _ in range(3)]
    old.close()
    # Undo the last step, as a database written by the release before it would be.
    raw = sqlite3.connect(path)
    raw.execute("drop trigger conversation_ids_increase")
    raw.execute("delete from counters where name = 'conversations'")
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    raw.commit()
    raw.close()
    store = Store(path)
    assert store.version == len(MIGRATIONS)
    store.delete(ids[-1])
    assert _new(store) == ids[-1] + 1


def test_rename_and_list(store: Store) -> None:
    cid = _new(store)
    _turn(store, cid, "first words here", "x")
    store.rename(cid, "Pump 7 service")
    rows = store.list_conversations()
    assert rows[0]["id"] == cid and rows[0]["title"] == "Pump 7 service" and rows[0]["messages"] == 2


def test_export_matches_the_conversation(store: Store) -> None:
    cid = _new(store)
    _turn(store, cid, "Q1 [/] *markup*", "A1 with `code`")
    _turn(store, cid, "Q2", "A2")
    data = json.loads(store.export(cid, "json"))
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Q1 [/] *markup*"),
        ("assistant", "A1 with `code`"),
        ("user", "Q2"),
        ("assistant", "A2"),
    ]
    md = store.export(cid, "md")
    for m in data["messages"]:
        assert m["content"] in md
    assert md.count("## You") == 2 and md.count("## Enclave") == 2
    assert "sha256 abababababab" in md


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EnclaveError) as info:
        Store(path)
    assert "cannot be opened" in info.value.message and "enclave doctor --repair" in info.value.hint


def test_integrity_after_many_turns(store: Store) -> None:
    cid = _new(store)
    for i in range(50):
        _turn(store, cid, f"q{i}", f"a{i}")
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(store.messages(cid)) == 100
    assert _connect(store).execute("select count(*) from messages").fetchone()[0] == 100


def test_deleted_text_is_gone_from_the_file(store: Store) -> None:
    cid = _new(store)
    _turn(store, cid, "my password is zebracorn4711", "noted zebracorn4711")
    store.delete(cid)
    for path in store.path.parent.iterdir():
        if path.name.startswith("enclave.db"):
            assert b"zebracorn4711" not in path.read_bytes(), path.name


def test_saving_into_a_deleted_conversation_is_a_clear_error(store: Store) -> None:
    cid = _new(store)
    store.delete(cid)
    with pytest.raises(EnclaveError) as info:
        _turn(store, cid, "late", "answer")
    assert "deleted" in info.value.message


def test_an_answer_without_sources_never_exports_as_a_quote(store: Store) -> None:
    """Found by a user: with documents off, the model copied the quote style of earlier
    answers ("> Harlow v Marsh is a landmark case…"), and the export showed it exactly as
    it shows verbatim quotes from the sources."""
    cid = _new(store)
    _turn(store, cid, "Write a note about Harlow v Marsh.", "> Harlow v Marsh is a landmark case.\nIt is.")
    md = store.export(cid, "md")
    assert "\\> Harlow v Marsh is a landmark case." in md
    assert not any(line.startswith(">") for line in md.splitlines())
