"""Hostile document sets: odd names, wildcards, links and bytes never corrupt the index or the terminal.

Each set is a folder built on a real file system and indexed with the real library
(SQLite file, parsing in its child process); then the commands that print names —
`docs status`, `docs list`, `docs search`, `ask --docs` — run as real processes over
all of them, and their output must hold no terminal control sequence.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from assistant.core.text import displayable
from assistant.retrieval.index import Library
from assistant.storage.database import Store
from tests.cli.test_cli import enclave

TEXT = "The pump valve resets the pressure.\n"


def _write(folder: Path, name: bytes | str, text: str | bytes = TEXT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(folder) + b"/" + (name if isinstance(name, bytes) else name.encode())
    with open(raw, "wb") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
    return Path(os.fsdecode(raw))


@pytest.fixture
def library(settings: Settings) -> Iterator[Library]:
    store = Store(settings.locations.database)
    yield Library(store, None, max_file_mb=1, parse_timeout=20)
    store.close()


def _paths(lib: Library, collection: str) -> list[str]:
    return [d["path"] for d in lib.documents(collection)]


# --------------------------------------------------------------- wildcards in folder names
@pytest.mark.parametrize(("name", "sibling"), [("a_b", "a1b"), ("50%", "50x"), ("x_%y", "xZzzy"), ("[ab]", "a")])
def test_sql_wildcards_in_folder_names_touch_only_that_folder(
    library: Library, tmp_path: Path, name: str, sibling: str
) -> None:
    root = tmp_path / "docs"
    _write(root / name, "one.txt")
    _write(root / sibling, "two.txt")
    library.add([root / sibling], "c")
    library.add([root / name], "c")  # re-walking one folder must not remove the other's files
    assert sorted(Path(p).parent.name for p in _paths(library, "c")) == sorted([name, sibling])
    assert library.remove("c", root / name) == 1
    assert [Path(p).parent.name for p in _paths(library, "c")] == [sibling]


# --------------------------------------------------------------- names that are not UTF-8
def test_a_file_name_that_is_not_utf8_is_indexed_and_later_runs_go_on(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _write(root, b"caf\xe9.txt")
    _write(root, "plain.txt")
    first = library.add([root], "c")
    assert first.files_indexed == 2 and first.skipped == []
    assert sorted(Path(p).name for p in _paths(library, "c")) == ["caf\\xe9.txt", "plain.txt"]
    _write(root, "third.txt")
    again = library.add([root], "c")  # used to abort every later run of the folder
    assert again.files_indexed == 1 and again.files_unchanged == 2 and again.files_removed == 0
    assert library.search("pressure", k=5)


def test_a_folder_name_that_is_not_utf8_is_indexed_and_synced(library: Library, tmp_path: Path) -> None:
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/d\xff\xfeocs"))
    _write(folder, "a.txt")
    assert library.add([folder], "c").files_indexed == 1
    assert library.sync("c").files_unchanged == 1  # the stored root leads back to the real folder


# --------------------------------------------------------------- one file, one entry
def test_dot_dot_and_dot_paths_index_a_file_once(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    file = _write(root / "sub", "a.txt")
    library.add([file], "c")
    library.add([root / "sub" / ".." / "sub" / "a.txt"], "c")
    library.add([root / "." / "sub"], "c")
    assert _paths(library, "c") == [str(file)]


def test_a_folder_reached_through_a_symlink_indexes_once(library: Library, tmp_path: Path) -> None:
    real = tmp_path / "real"
    _write(real, "a.txt")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    library.add([link], "c")
    library.add([real], "c")
    assert _paths(library, "c") == [str(real / "a.txt")]


def test_links_inside_outside_and_looping_are_skipped_with_a_reason(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    inside = _write(root, "a.txt")
    (root / "dup.txt").symlink_to(inside)
    outside = _write(tmp_path / "secret", "s.txt")
    (root / "out.txt").symlink_to(outside)
    (root / "loop.txt").symlink_to(root / "loop.txt")
    (root / "sub").symlink_to(root, target_is_directory=True)
    report = library.add([root], "c")
    assert _paths(library, "c") == [str(inside)]
    reasons = dict((Path(p).name, r) for p, r in report.skipped)
    assert set(reasons) == {"dup.txt", "out.txt", "loop.txt", "sub"}


def test_a_fifo_is_skipped_not_waited_for(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _write(root, "a.txt")
    os.mkfifo(root / "pipe.txt")
    report = library.add([root], "c")
    assert [Path(p).name for p, _ in report.skipped] == ["pipe.txt"] and report.files_indexed == 1


# --------------------------------------------------------------- bytes inside files
@pytest.mark.parametrize(
    "content",
    [
        b"Pump\x00 valve \x00\x00resets pressure.\n",
        b"Pump valve caf\xe9 \xff\xfe resets pressure.\n",
        b"Pump valve \x1b]52;c;ZXZpbA==\x07 \x1b[2J resets pressure.\n",
        b"",
        ("Pump valve resets pressure. " * 4000).encode(),
    ],
    ids=["nul", "not-utf8", "escapes", "empty", "long-line"],
)
def test_hostile_contents_are_indexed_or_skipped_never_a_crash(
    library: Library, tmp_path: Path, content: bytes
) -> None:
    root = tmp_path / "docs"
    _write(root, "a.txt", content)
    report = library.add([root], "c")
    assert report.files_indexed + len(report.skipped) == 1
    for hit in library.search("pump valve pressure", k=3):
        assert not _CONTROL.search(displayable(hit.text).replace("\n", "").replace("\t", ""))


# --------------------------------------------------------------- names on the terminal
HOSTILE_NAMES: dict[str, bytes] = {
    "osc52-clipboard": b"osc\x1b]52;c;ZXZpbA==\x07.txt",
    "window-title": b"title\x1b]0;pwned\x07.txt",
    "clear-screen": b"clear\x1b[2J\x1b[H.txt",
    "newline": b"two\nlines.txt",
    "carriage-return": b"over\rwrite.txt",
    "bidi-override": "bidi\u202etxt.exe.txt".encode(),
    "c1-csi": "c1\u009b31m.txt".encode(),
    "not-utf8": b"caf\xe9.txt",
    "long": b"n" * 240 + b".txt",
    "quotes-and-backslash": b"it's \"a\" \\ name.txt",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_names_with_escapes_print_safely_in_every_command(enclave_home: Path, tiny_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for name in HOSTILE_NAMES.values():
        _write(root, name, "The P-200 pump valve resets the pressure to 4 bar.\n")
    enclave("models", "add", str(tiny_dir), "--name", "tiny", home=enclave_home)
    add = enclave("docs", "add", str(root), "-c", "hostile\x1b]0;x\x07", home=enclave_home)
    runs = [
        add,
        enclave("docs", "status", home=enclave_home),
        enclave("docs", "list", home=enclave_home),
        enclave("docs", "search", "pump", "valve", "-k", "20", home=enclave_home),
        enclave("ask", "-m", "tiny", "--max-tokens", "4", "--ctx", "1024", "--docs", "What resets the pump?",
                home=enclave_home),  # fmt: skip
        enclave("history", "list", home=enclave_home),
    ]
    for proc in runs:
        for stream in (proc.stdout, proc.stderr):
            assert not _CONTROL.search(stream), (proc.args, repr(stream[:500]))
    status = runs[1].stdout
    assert status.count(".txt") == len(HOSTILE_NAMES)  # every file listed, one line each
    assert "osc\\x1b]52;c;ZXZpbA==\\x07.txt" in status and "caf\\xe9.txt" in status and "\\u202e" in status
