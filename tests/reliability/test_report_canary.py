"""`enclave report` holds no conversation or document content.

A scripted session plants unique canaries in a question, a chat, a conversation title,
a system prompt (a persona's text and its file name), a document's text and its file
name, a collection name, and a redaction pattern in the settings; each is first shown to
be really stored (the plaintext database holds it). The report archive, unpacked, holds
none of them in any encoding — while it does hold what a support person needs.
"""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path

from tests.reliability.test_canary import Session, scan


def test_the_incident_report_holds_no_canary(tmp_path: Path, tiny_dir: Path) -> None:
    home, tmpdir, outside = tmp_path / "home", tmp_path / "tmp", tmp_path / "outside"
    tmpdir.mkdir()
    outside.mkdir()
    c = [f"Canary{i}r{uuid.uuid4().hex[:10]}" for i in range(8)]
    enclave = Session(home, tmpdir, None)
    enclave("models", "add", str(tiny_dir), "--name", "tiny")
    (home / "config" / "prompts").mkdir(parents=True)
    # A system prompt holding a canary, in a persona whose file name is another.
    (home / "config" / "prompts" / f"{c[1].lower()}.md").write_text(f"You advise on matter {c[0]}.\n")
    (home / "config" / "config.toml").write_text(f"cloud_redact_patterns = ['{c[7]}']\n")
    enclave("ask", "-m", "tiny", "-p", c[1].lower(), "--max-tokens", "8", f"Is {c[2]} privileged?")
    enclave("chat", "-m", "tiny", "--max-tokens", "8", stdin=f"Summarise {c[3]} for the client.\n")
    enclave("history", "rename", "1", f"Title {c[4]}")
    doc = outside / f"memo-{c[5]}.txt"
    doc.write_text(f"Privileged memo. The matter is {c[6]}.\n" * 20, encoding="utf-8")
    enclave("docs", "add", str(doc), "-c", f"coll{c[0]}")
    enclave("ask", "-m", "tiny", "--max-tokens", "8", "--ctx", "1024", "--docs", f"What is {c[6]}?")
    stored = scan([home], c)
    assert all(stored[x] for x in c), f"not stored, so not a test: {[x for x in c if not stored[x]]}"

    archive = tmp_path / "report.tar.gz"
    assert "holds no conversation" in enclave("report", "-o", str(archive))
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        names = sorted(Path(n).name for n in tar.getnames())
        tar.extractall(unpacked, filter="data")
    assert names == sorted(
        ["versions.json", "settings.json", "doctor.txt", "hardware.json", "errors.json", "stats.json",
         "models.json", "audit.json"]
    )  # fmt: skip
    assert scan([unpacked], c) == {x: [] for x in c}
    # ...and it is useful: the audit head and verify result, stats, models, settings.
    (folder,) = list(unpacked.iterdir())
    audit = json.loads((folder / "audit.json").read_text())
    assert audit["verify"] == "intact" and audit["head"]["seq"] == audit["entries"] > 0
    assert audit["kinds"]["model_load"] >= 1
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["models"][0]["model"] == "tiny" and stats["models"][0]["answers"] == 3
    assert json.loads((folder / "models.json").read_text())["installed"][0]["name"] == "tiny"
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["cloud_redact_patterns"] == "(1 withheld)"
    assert "Privacy" in (folder / "doctor.txt").read_text()
    assert json.loads((folder / "hardware.json").read_text())["cpu"]["cores"] >= 1
