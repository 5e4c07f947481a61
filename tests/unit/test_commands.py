"""The slash commands both front ends share (assistant.app.commands), titles and the window hint."""

from __future__ import annotations

import pytest

from assistant.app import commands
from assistant.app.history import title_for
from assistant.app.notices import window_hint
from assistant.core.errors import EnclaveError


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/help", commands.Command("help")),
        ("/?", commands.Command("help")),
        ("/bye", commands.Command("bye")),
        ("/exit", commands.Command("bye")),
        ("/QUIT", commands.Command("bye")),
        ("  /set temperature 0.7 ", commands.Command("set", "temperature 0.7")),
        ("/regenerate", commands.Command("retry")),
        ("/docs add ~/My Manuals", commands.Command("docs", "add ~/My Manuals")),
        ("How do I reset it?", "How do I reset it?"),
        ("//etc/hosts is a file", "/etc/hosts is a file"),
    ],
)
def test_parse_line(line: str, parsed: object) -> None:
    assert commands.parse_line(line) == parsed


def test_an_unknown_command_is_an_error_not_a_message() -> None:
    with pytest.raises(EnclaveError, match=r"Unknown command /hlep\. Type /help"):
        commands.parse_line("/hlep me")


def test_every_command_has_a_handler_in_both_front_ends() -> None:
    from assistant.cli.repl import HANDLERS as CHAT
    from tui.slash import HANDLERS as TUI

    names = {spec.name for spec in commands.COMMANDS}
    assert names == set(CHAT) and names <= set(TUI)
    assert all(usage.startswith("/") for usage, _ in commands.help_rows("chat") + commands.help_rows("tui"))


@pytest.mark.parametrize(
    ("arg", "parsed"),
    [
        ("", ""),
        ("off", "off"),
        ("manuals contracts", "manuals contracts"),
        ("sync", commands.DocsSync(None)),
        ("sync manuals", commands.DocsSync("manuals")),
        ('add "/srv/My Manuals" -c field', commands.DocsAdd(("/srv/My Manuals",), "field")),
        ("add a.md b.pdf", commands.DocsAdd(("a.md", "b.pdf"), None)),
    ],
)
def test_parse_docs(arg: str, parsed: object) -> None:
    assert commands.parse_docs(arg) == parsed


@pytest.mark.parametrize(
    ("arg", "parsed"),
    [
        ("", commands.Export(None)),
        ("--force", commands.Export(None, True)),
        ("/tmp/My Notes.md", commands.Export("/tmp/My Notes.md")),
        ("/dev/null --force", commands.Export("/dev/null", True)),
        ("-f link.md", commands.Export("link.md", True)),
        ('"/tmp/a b.md" --force', commands.Export("/tmp/a b.md", True)),
        ("./-odd.md", commands.Export("./-odd.md")),
    ],
)
def test_parse_export_takes_force_as_a_word_never_as_part_of_the_name(arg: str, parsed: object) -> None:
    assert commands.parse_export(arg) == parsed


def test_parse_export_refuses_an_unknown_option() -> None:
    with pytest.raises(EnclaveError, match="Unknown option for /export: --forse"):
        commands.parse_export("--forse out.md")


def test_parse_model() -> None:
    engines = ("onnx", "litert")
    assert commands.parse_model("", engines) == (None, None)
    assert commands.parse_model("smollm2", engines) == ("smollm2", None)
    assert commands.parse_model("smollm2 litert", engines) == ("smollm2", "litert")
    assert commands.parse_model("smollm2@litert", engines) == ("smollm2", "litert")
    with pytest.raises(EnclaveError, match="Usage: /model NAME"):
        commands.parse_model("smollm2 tpu", engines)


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("/help", "/help"),
        ("  How   do I\nreset it? ", "How do I reset it?"),
        (
            "How do I bleed the air out of the hydraulic pump on the P-200 before the test",
            "How do I bleed the air out of the hydraulic…",
        ),
        ("x" * 100, "x" * 47 + "…"),  # one long word is cut inside
    ],
)
def test_titles_are_cut_at_a_word_boundary(text: str, title: str) -> None:
    assert title_for(text) == title
    assert len(title_for(text)) <= 48


def test_window_hint_names_a_fixed_window() -> None:
    assert window_hint(4096, 2048, 2048) == (
        "This model's window is fixed at 2,048 tokens, so --ctx 4,096 cannot raise it."
    )
    assert window_hint(2048, 8192, 2048) == "Or raise --ctx: this model allows up to 8,192 tokens."
    assert "already the model's whole window" in window_hint(2048, 2048, 2048)
    assert window_hint(2048, 8192, 2048, needed=8000) == "Or raise --ctx: this model allows up to 8,192 tokens."
    assert "Not even the model's whole window (8,192 tokens) holds 9,000" in window_hint(2048, 8192, 2048, needed=9000)
