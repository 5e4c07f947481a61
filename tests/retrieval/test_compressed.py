"""Gzip-compressed documents (Debian's /usr/share/doc/*/changelog.gz, README.Debian.gz,
*.rst.gz): read as the file inside, cited at the .gz path, and guarded against bombs."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.core.settings import Settings
from assistant.retrieval.index import Library
from assistant.retrieval.worker import ParseFailed, ParserPool
from assistant.storage.database import Store
from tests.retrieval.test_ingest import make_pdf


@pytest.fixture
def library(settings: Settings) -> Iterator[Library]:
    store = Store(settings.locations.database)
    yield Library(store, None, max_file_mb=1, parse_timeout=20)
    store.close()


def gz(path: Path, text: str | bytes) -> Path:
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))
    return path


def inside(path: str, start: int, end: int) -> str:
    """Lines ``start``..``end`` of the decompressed text of a .gz file (each stripped, as
    passages keep them)."""
    lines = gzip.decompress(Path(path).read_bytes()).decode().splitlines()[start - 1 : end]
    return "\n".join(line.strip() for line in lines)


def test_gzip_documents_are_read_as_the_file_inside(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "doc"
    docs.mkdir()
    gz(docs / "guide.rst.gz", "Radio\n=====\n\nIntro.\n\nChannel 9 is reserved for emergencies.\n")
    gz(docs / "manual.md.gz", "# Generator\n\n## Starting\n\nPrime the fuel pump twice,\nthen pull the cord.\n")
    gz(docs / "page.html.gz", "<html><body>\n<h1>Valve</h1>\n<p>Torque the valve bolts\nto 35 newton metres.</p>\n")
    gz(docs / "notes.txt.gz", "The compressor oil is changed every 500 hours.\n")
    gz(docs / "README.gz", "Introduction.\n\nThe daemon reads its settings from the tuning file.\n")
    gz(docs / "NEWS.Debian.gz", "pkg (2.0-1) unstable\n\n  * The socket moved to the run directory.\n")
    gz(docs / "changelog.Debian.amd64.gz", "Rebuilt against the new libc for the binNMU.\n")
    gz(docs / "scan.pdf.gz", make_pdf(["Cover page.", "The warranty lasts thirty six months."]))
    gz(docs / "data.json.gz", '{"a": 1}')
    gz(docs / "bundle.tar.gz", b"\0" * 1024)
    (docs / "README.Debian").write_text("Debian notes: the service starts with the machine.\n")

    report = library.add([docs], "debian")
    assert dict(report.skipped) == {
        str(docs / "bundle.tar.gz"): "unsupported file type .tar.gz",
        str(docs / "data.json.gz"): "unsupported file type .json.gz",
    }
    kinds = {Path(d["path"]).name: d["kind"] for d in library.documents("debian")}
    assert kinds == {
        "guide.rst.gz": "rst", "manual.md.gz": "markdown", "page.html.gz": "html", "notes.txt.gz": "text",
        "README.gz": "text", "NEWS.Debian.gz": "text", "changelog.Debian.amd64.gz": "text",
        "scan.pdf.gz": "pdf", "README.Debian": "text",
    }  # fmt: skip

    # Cited at the .gz path, with the line numbers of the decompressed text.
    for query, name, lines in [
        ("channel emergencies", "guide.rst.gz", (4, 6)),
        ("prime fuel pump cord", "manual.md.gz", (5, 6)),
        ("daemon settings tuning", "README.gz", (1, 3)),
        ("socket run directory", "NEWS.Debian.gz", (1, 3)),
        ("binNMU libc", "changelog.Debian.amd64.gz", (1, 1)),
    ]:
        hit = library.search(query, k=1)[0]
        assert (Path(hit.path).name, (hit.line_start, hit.line_end)) == (name, lines)
        assert inside(hit.path, hit.line_start, hit.line_end) == hit.text
    hit = library.search("torque valve bolts", k=1)[0]
    assert (Path(hit.path).name, hit.line_start, hit.line_end) == ("page.html.gz", 3, 4)  # the HTML source's lines
    hit = library.search("warranty thirty six months", k=1)[0]
    assert (Path(hit.path).name, hit.page) == ("scan.pdf.gz", 2)


def test_a_changed_gzip_file_is_noticed_and_read_again(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "doc"
    docs.mkdir()
    changelog = gz(docs / "changelog.gz", "Version 1 fixes the pump timer.\n")
    assert library.add([docs], "c").files_indexed == 1
    [doc] = library.db.execute("select id from documents").fetchall()
    assert [s.state for s in library.freshness([doc[0]])] == ["fresh"]
    os.utime(changelog)  # touched, same bytes: still fresh, nothing to read
    assert [s.state for s in library.freshness([doc[0]])] == ["fresh"]
    assert library.add([docs], "c").files_unchanged == 1

    gz(changelog, "Version 1 fixes the pump timer.\n\nVersion 2 adds the boiler alarm.\n")
    states = library.freshness([doc[0]])
    assert [s.state for s in states] == ["changed"]
    assert library.refresh(states).files_indexed == 1
    hit = library.search("boiler alarm", k=1)[0]
    assert (Path(hit.path).name, hit.line_start, hit.line_end) == ("changelog.gz", 1, 3)
    changelog.unlink()
    assert library.add([docs], "c").files_removed == 1


def test_damaged_and_oversized_gzip_files_are_skipped_with_a_reason(library: Library, tmp_path: Path) -> None:
    docs = tmp_path / "doc"
    docs.mkdir()
    gz(docs / "bomb.txt.gz", b"a" * (3 * 2**20))  # 3 KiB on disk, 3 MiB inflated: over this library's 1 MiB
    gz(docs / "bomb.gz", b"The first bytes look like text. " + b" " * (3 * 2**20))  # suffix-less: sniffed first
    whole = gzip.compress(b"Some text about the blue valve.\n" * 500)
    (docs / "cut.txt.gz").write_bytes(whole[: len(whole) // 2])
    (docs / "fake.md.gz").write_text("plain text, not gzip")
    crc = bytearray(gzip.compress(b"The checksum will not match this text.\n"))
    crc[-8] ^= 0xFF  # the CRC-32 in the trailer
    (docs / "crc.rst.gz").write_bytes(bytes(crc))
    (docs / "README.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is not deflate")
    gz(docs / "empty.txt.gz", b"")
    gz(docs / "binary.gz", os.urandom(4096) + b"\0" * 64)
    gz(docs / "good.txt.gz", "The good file mentions the red valve.\n")

    report = library.add([docs], "bad")
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert report.files_indexed == 1 and set(reasons) == {
        "bomb.txt.gz", "bomb.gz", "cut.txt.gz", "fake.md.gz", "crc.rst.gz", "README.gz", "empty.txt.gz", "binary.gz",
    }  # fmt: skip
    for name in ("bomb.txt.gz", "bomb.gz"):
        assert reasons[name] == (
            "refused: it decompresses to more than 1 MiB, the limit for one file (setting docs_max_file_mb; a gzip bomb?)"
        )
    assert reasons["cut.txt.gz"] == "damaged gzip file (cut short: the compressed data ends early)"
    assert reasons["fake.md.gz"] == "damaged gzip file (not a gzip file: no gzip header)"
    assert reasons["crc.rst.gz"].startswith("damaged gzip file (CRC check failed")
    # Found while sniffing the content (no suffix says what is inside).
    assert reasons["README.gz"] == "damaged gzip file (corrupt compressed data: invalid code lengths set)"
    assert reasons["empty.txt.gz"] == "empty once decompressed (0 bytes)"
    assert reasons["binary.gz"] == "no file-type suffix and the content is not text"
    assert not any("parser error" in r or "Traceback" in r for r in reasons.values())
    assert Path(library.search("red valve", k=1)[0].path).name == "good.txt.gz"


def test_a_gzip_bomb_never_inflates_past_the_limit_in_the_parser(tmp_path: Path) -> None:
    """512 MiB of zeros in a 0.5 MB file: a parser limited to 400 MiB of memory refuses
    it at the 200 MiB per-file limit instead of running out of memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    zeros = b"\0" * (16 * 2**20)
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(b"".join(packer.compress(zeros) for _ in range(32)) + packer.flush())
    assert bomb.stat().st_size < 2**20
    good = gz(tmp_path / "good.txt.gz", "still works")
    with ParserPool(timeout=60, memory_mb=400, max_bytes=200 * 2**20) as pool:
        with pytest.raises(ParseFailed, match="more than 200 MiB.*gzip bomb"):
            pool.parse(bomb)
        assert pool.parse(good).blocks[0].text == "still works"  # the same child: it did not die
