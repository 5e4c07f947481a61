"""`enclave chat` as a line chat: slash commands (never sent to the model), /set, /retry,
/edit, --system, and --continue bringing a conversation back as it was left
(real subprocesses on the tiny model; the rows written are checked in SQLite)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.cli.test_cli import enclave


@pytest.fixture
def home(enclave_home: Path, tiny_dir: Path) -> Path:
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    return enclave_home


def _rows(home: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(home / "data" / "enclave.db") as db:
        return list(db.execute(sql))


def _chat(home: Path, lines: list[str], *args: str, check: bool = True) -> list[dict[str, object]]:
    proc = enclave("chat", "-m", "tiny", "--json", "--max-tokens", "4", *args, home=home, stdin="\n".join(lines) + "\n")
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_commands_are_never_sent_to_the_model_nor_become_a_title(home: Path) -> None:
    proc = enclave(
        "chat", "-m", "tiny", "--max-tokens", "4", home=home,
        stdin="/help\n/?\n/show\n//etc/hosts is a file\n/bye\nnever read\n",
    )  # fmt: skip
    assert "/set temperature T" in proc.stderr and "/retry" in proc.stderr  # the help, on stderr
    assert "model: tiny · onnx" in proc.stderr  # /show
    users = [content for (content,) in _rows(home, "select content from messages where role = 'user'")]
    assert users == ["/etc/hosts is a file"]  # // sends a line that begins with /; /bye ended the chat
    assert _rows(home, "select title from conversations") == [("/etc/hosts is a file",)]


@pytest.mark.parametrize("word", ["/bye", "/exit", "/quit"])
def test_bye_exit_and_quit_leave(home: Path, word: str) -> None:
    rows = _chat(home, ["first", word, "second"])
    assert len(rows) == 1


def test_an_unknown_command_is_an_error_and_nothing_is_sent(home: Path) -> None:
    proc = enclave("chat", "-m", "tiny", home=home, stdin="/hlep\n", check=False)
    assert proc.returncode == 1 and "Unknown command /hlep. Type /help" in proc.stderr
    assert _rows(home, "select count(*) from messages") == [(0,)]


def test_set_changes_sampling_and_the_system_prompt_and_is_kept(home: Path) -> None:
    _chat(home, ["/set temperature 0.7", "/set parameter repeat_penalty 1.2", '/set system "Answer in French."', "hi"])
    (options, system) = _rows(home, "select options, system_prompt from conversations")[0]
    assert json.loads(str(options)) == {"temperature": 0.7, "repetition_penalty": 1.2}
    assert system == "Answer in French."
    proc = enclave("chat", "--continue", home=home, stdin="/show\n")
    assert "temperature 0.7 · repeat penalty 1.2" in proc.stderr and "system prompt: Answer in French." in proc.stderr
    bad = enclave("chat", "-m", "tiny", home=home, stdin="/set temperature 9\n", check=False)
    assert bad.returncode == 1 and "temperature" in bad.stderr and "≤ 2" in bad.stderr


def test_system_option_and_repeat_penalty_on_ask(home: Path) -> None:
    data = json.loads(
        enclave(
            "ask",
            "-m",
            "tiny",
            "--json",
            "--max-tokens",
            "4",
            "--system",
            "Be terse.",
            "--repeat-penalty",
            "1.1",
            "hi",
            home=home,
        ).stdout  # fmt: skip
    )
    (system, options) = _rows(
        home, f"select system_prompt, options from conversations where id = {data['conversation_id']}"
    )[0]
    assert system == "Be terse." and json.loads(str(options))["repetition_penalty"] == 1.1


def test_retry_and_edit_replace_the_last_exchange_and_reuse_the_cache(home: Path) -> None:
    rows = _chat(home, ["first question", "second question", "/retry", "/edit the second, edited"])
    assert len(rows) == 4
    second, retried, edited = rows[1]["usage"], rows[2]["usage"], rows[3]["usage"]
    assert isinstance(second, dict) and isinstance(retried, dict) and isinstance(edited, dict)
    # The retry reads the same prompt: the cache rewinds to just before the answer.
    assert retried["prompt_tokens"] == second["prompt_tokens"] and retried["prefilled_tokens"] <= 1
    # The edit rewinds to just before the message: only the new message is read.
    assert edited["prefilled_tokens"] < edited["prompt_tokens"] - 20
    users = [c for (c,) in _rows(home, "select content from messages where role = 'user' order by seq")]
    assert users == ["first question", "the second, edited"]
    kinds = [k for (k,) in _rows(home, "select kind from audit order by seq")]
    assert kinds.count("turn_replaced") == 2


def test_retry_without_an_answer_is_an_error(home: Path) -> None:
    proc = enclave("chat", "-m", "tiny", home=home, stdin="/retry\n", check=False)
    assert proc.returncode == 1 and "There is no answer to replace yet." in proc.stderr


def test_titles_are_cut_at_a_word_boundary(home: Path) -> None:
    text = "How do I bleed the air out of the hydraulic pump on the P-200 before the pressure test"
    _chat(home, [text])
    (title,) = _rows(home, "select title from conversations")[0]
    assert title == "How do I bleed the air out of the hydraulic…"
    assert text.startswith(str(title).removesuffix("…"))


def test_new_model_and_docs_commands(home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "Pump Manuals"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds to reset the pressure.\n")
    proc = enclave(
        "chat", "-m", "tiny", "--json", "--max-tokens", "4", "--ctx", "1024", home=home,
        stdin=f'/docs add "{docs}"\nHow do I reset the pressure?\n/model\n/new\n/docs\n/docs sync\n/docs off\n',
    )  # fmt: skip
    assert "pump-manuals: 1 indexed" in proc.stderr  # the collection is named after the folder
    assert "Documents on (pump-manuals)" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["citations"][0]["path"].endswith("pump.md")
    assert "* tiny · onnx" in proc.stderr  # /model lists the installed models, the current one marked
    # /new keeps the documents switch: a new context, the same set-up.
    assert "Documents on: pump-manuals." in proc.stderr
    assert "pump-manuals: 0 indexed, 1 unchanged" in proc.stderr
    assert "Documents off" in proc.stderr


def test_continue_restores_documents_and_sources(home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nHold the red RESET button for five seconds to reset the pressure.\n")
    enclave("docs", "add", str(docs), "-c", "manuals", home=home)
    first = _chat(home, ["How do I reset the pressure?"], "--docs", "manuals", "--ctx", "1024")
    assert first[0]["citations"]
    (documents,) = _rows(home, "select documents from conversations")[0]
    assert json.loads(str(documents)) == ["manuals"]
    again = _chat(home, ["And how long do I hold the RESET button?"], "--continue", "--ctx", "1024")
    assert again[0]["conversation_id"] == first[0]["conversation_id"]
    assert again[0]["citations"], "documents were not restored"
    # A collection removed since is left out, with a notice.
    enclave("docs", "remove", "manuals", "--yes", home=home)
    proc = enclave("chat", "--continue", home=home, stdin="/show\n")
    assert "collections are gone; documents are off" in proc.stderr and "Documents off." in proc.stderr


def test_export_refuses_a_link_and_force_replaces_it_without_a_stray_file(home: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    real.write_text("keep me\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    proc = enclave("chat", "-m", "tiny", "--max-tokens", "4", home=home, stdin=f"hello\n/export {link}\n", check=False)
    assert proc.returncode == 1 and "is a symbolic link" in proc.stderr and "--force" in proc.stderr
    assert link.is_symlink() and real.read_text() == "keep me\n"
    # Following the hint: --force is a word of the command, not part of the file name.
    enclave("chat", "-m", "tiny", "--max-tokens", "4", home=home, stdin=f"hello\n/export {link} --force\n")
    assert not link.is_symlink() and "hello" in link.read_text()
    assert real.read_text() == "keep me\n"  # the link was replaced, not the file it pointed to
    assert not (tmp_path / "link.md --force").exists()


def test_show_says_a_no_save_chat_is_not_saved(home: Path) -> None:
    proc = enclave("chat", "-m", "tiny", "--max-tokens", "4", "--no-save", home=home, stdin="hello\n/show\n")
    assert "conversation: not saved (--no-save)" in proc.stderr
    assert _rows(home, "select count(*) from conversations") == [(0,)]


def test_a_follow_up_is_searched_with_the_question_it_follows(home: Path, tmp_path: Path) -> None:
    """Found by a tester: "And how often is its seal replaced?" was searched alone, so the
    valve manual (more about seals) outranked the pump the conversation was about."""
    docs = tmp_path / "manuals"
    docs.mkdir()
    (docs / "pump.md").write_text(
        "# Pump\n\nHold the red RESET button for five seconds to reset the pump. The pump seal is replaced every 2 years.\n"
    )
    (docs / "valve.md").write_text(
        "# Valve\n\nThe valve seal is replaced every 6 months. Tighten the valve seal to 12 Nm after the seal is replaced.\n"
    )
    enclave("docs", "add", str(docs), "-c", "manuals", home=home)
    questions = ["How do I reset the pump?", "How often is its seal replaced?", "How often is the seal replaced?"]
    first, follow_up, standalone = _chat(home, questions, "--docs", "manuals")

    def ranked(turn: dict[str, object]) -> list[str]:
        return [Path(str(c["path"])).name for c in turn["citations"]]  # type: ignore[attr-defined]

    assert ranked(first)[0] == "pump.md"
    # "its" refers back: searched with the first question, so the pump's passage leads, and it is said.
    assert ranked(follow_up)[0] == "pump.md"
    assert any("Searched together with your previous question" in n for n in follow_up["notices"])  # type: ignore[attr-defined]
    # A question that stands on its own is searched as it is: the valve manual says more about seals.
    assert ranked(standalone)[0] == "valve.md"
    assert not any("previous question" in n for n in standalone.get("notices", []))  # type: ignore[attr-defined]
