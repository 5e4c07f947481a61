"""Signed bundles, installed through the app layer on real files, a real database, real
model-signing signatures and a real probe child: every tampered bundle is refused before
anything loads it, and what is in use never changes."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.app.updates import LOADING_MARKER, Updates
from assistant.catalog.bundles import BundleError, stage
from assistant.catalog.manifests import Catalog
from assistant.core.errors import EnclaveError
from assistant.core.settings import Settings
from assistant.signing import create_key
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store

Tamper = Callable[[Path, Path], None]


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.open(settings)


@pytest.fixture
def updates(settings: Settings, store: Store) -> Updates:
    return Updates(settings, store)


@pytest.fixture
def publisher(settings: Settings, updates: Updates, tiny_installed: object) -> Path:
    """A trusted key of this machine; the tiny model installed as v1 from a bundle it signed."""
    from assistant.app import keys

    key = create_key(settings.locations.config, "publisher")
    keys.trust(updates.store, keys.read_candidate(key.public_path), "test")
    return key.public_path


def _bundle(updates: Updates, tmp_path: Path, version: int, key: str = "publisher") -> Path:
    out = tmp_path / f"tiny-v{version}.bundle"
    updates.bundle("tiny", "onnx", version, out, key=key)
    return out


def _kinds(updates: Updates) -> list[str]:
    return [str(e["kind"]) for e in AuditLog(updates.store).entries()]


def _rewrite(
    source: Path, target: Path, edit: Callable[[tarfile.TarInfo, bytes], list[tuple[tarfile.TarInfo, bytes]]]
) -> None:
    """Copy the tar ``source`` to ``target``, passing each member through ``edit``."""
    with tarfile.open(source) as tar, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as out:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            data = handle.read() if handle else b""
            for info, payload in edit(member, data):
                out.addfile(info, io.BytesIO(payload) if info.isreg() else None)


def _flip_weight_byte(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    with tarfile.open(src) as tar:
        member = tar.getmember("payload/model/model.onnx.data")
    data[member.offset_data + 5000] ^= 0x01
    dst.write_bytes(bytes(data))


def _truncate(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])


def _extra_file(src: Path, dst: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name != "payload/model/genai_config.json":
            return [(m, data)]
        extra = tarfile.TarInfo("payload/model/extra.onnx")
        extra.size = 4
        return [(m, data), (extra, b"evil")]

    _rewrite(src, dst, edit)


def _missing_file(src: Path, dst: Path) -> None:
    _rewrite(src, dst, lambda m, data: [] if m.name == "payload/model/tokenizer_config.json" else [(m, data)])


def _renamed_file(src: Path, dst: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name == "payload/model/chat_template.jinja":
            m.name = "payload/model/chat_template.old"
        return [(m, data)]

    _rewrite(src, dst, edit)


def _symlink(src: Path, dst: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name != "payload/model/chat_template.jinja":
            return [(m, data)]
        link = tarfile.TarInfo(m.name)
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        return [(link, b"")]

    _rewrite(src, dst, edit)


def _path_escape(src: Path, dst: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name != "payload/release.json":
            return [(m, data)]
        evil = tarfile.TarInfo("payload/../../escaped.txt")
        evil.size = 2
        return [(m, data), (evil, b"hi")]

    _rewrite(src, dst, edit)


def _edited_release(src: Path, dst: Path) -> None:
    def edit(m: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name == "payload/release.json":
            release = json.loads(data)
            release["version"] = 99  # a signed v2 passed off as v99
            data = json.dumps(release).encode()
            m.size = len(data)
        return [(m, data)]

    _rewrite(src, dst, edit)


TAMPERS: dict[str, tuple[Tamper, str]] = {
    "byte flip in the weights": (
        _flip_weight_byte,
        "does not match the bundle's files: changed: model/model.onnx.data",
    ),
    "truncated": (_truncate, "damaged or truncated"),
    "extra file": (_extra_file, "files: not signed: model/extra.onnx"),
    "missing file": (_missing_file, "files: missing: model/tokenizer_config.json"),
    "renamed file": (_renamed_file, "not signed: model/chat_template.old; missing: model/chat_template.jinja"),
    "symbolic link": (_symlink, "holds a symbolic link: payload/model/chat_template.jinja"),
    "path escape": (_path_escape, "would escape its folder"),
    "edited release.json": (_edited_release, "does not match the bundle's files: changed: release.json"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_a_tampered_bundle_is_refused_before_any_load(
    name: str, updates: Updates, publisher: Path, tmp_path: Path
) -> None:
    _bundle(updates, tmp_path, 1)
    updates.install(tmp_path / "tiny-v1.bundle")
    good = _bundle(updates, tmp_path, 2)
    tamper, expected = TAMPERS[name]
    bad = tmp_path / "tampered.bundle"
    tamper(good, bad)
    before = _kinds(updates)
    link = updates.current_link("tiny", "onnx")
    target = os.readlink(link)
    with pytest.raises(EnclaveError) as caught:
        updates.install(bad)
    assert expected in caught.value.message
    new = _kinds(updates)[len(before) :]
    # Refused, audited, and nothing loaded it: no probe child ran, no engine load, no switch.
    assert new == ["model_install_refused"]
    assert os.readlink(link) == target
    assert not (tmp_path.parent / "escaped.txt").exists()
    current = updates.releases.in_state("tiny", "onnx", "current")
    assert current is not None and current.version == 1
    assert not (updates.settings.locations.releases / ".staging").exists()


def test_an_untrusted_key_and_an_older_version_are_refused(
    settings: Settings, updates: Updates, publisher: Path, tmp_path: Path
) -> None:
    create_key(settings.locations.config, "stranger")
    stranger = _bundle(updates, tmp_path, 5, key="stranger")
    with pytest.raises(EnclaveError, match="which this machine does not trust"):
        updates.install(stranger)
    updates.install(_bundle(updates, tmp_path, 2))
    older = _bundle(updates, tmp_path, 1)
    with pytest.raises(EnclaveError, match="v1 is not newer than v2"):
        updates.install(older)
    with pytest.raises(EnclaveError, match="v2 is not newer than v2"):
        updates.install(_bundle(updates, tmp_path, 2))
    assert "model_probe" not in _kinds(updates)[-3:]


def test_the_counter_survives_removing_the_model_and_its_database_row(
    settings: Settings, updates: Updates, store: Store, publisher: Path, tmp_path: Path
) -> None:
    bundle_v3 = _bundle(updates, tmp_path, 3)
    updates.install(bundle_v3)
    bundle_v2 = _bundle(updates, tmp_path, 2)
    from assistant.app.updates import remove_model

    remove_model(settings, store, "tiny", "onnx")
    # Even with the counter row gone (a hand edit), the audit chain still knows v3.
    with store.transaction() as db:
        db.execute("delete from release_counters")
    with pytest.raises(EnclaveError, match="not newer than v3"):
        updates.install(bundle_v2)


def test_a_folder_bundle_installs_and_a_symlink_in_it_is_refused(
    updates: Updates, publisher: Path, tmp_path: Path
) -> None:
    bundle = _bundle(updates, tmp_path, 1)
    folder = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(folder, filter="data")
    (folder / "payload" / "model" / "link").symlink_to("/etc/hostname")
    with pytest.raises(BundleError, match="symbolic link: payload/model/link"):
        updates.install(folder)
    (folder / "payload" / "model" / "link").unlink()
    assert updates.install(folder).version == 1


def test_staging_enforces_the_size_limit(updates: Updates, publisher: Path, tmp_path: Path) -> None:
    bundle = _bundle(updates, tmp_path, 1)
    with pytest.raises(BundleError, match="more than the limit"):
        stage(bundle, tmp_path / "staging", limit_bytes=100_000)
    assert not (tmp_path / "staging").exists()


def test_install_switches_and_rollback_is_an_audited_waiver(updates: Updates, publisher: Path, tmp_path: Path) -> None:
    first = updates.install(_bundle(updates, tmp_path, 1))
    assert first.previous_version == 0  # the model added by hand became v0
    second = updates.install(_bundle(updates, tmp_path, 2))
    assert (second.version, second.previous_version) == (2, 1)
    model = Catalog(updates.settings).find("tiny", "onnx")
    assert model.manifest["release"]["version"] == 2
    assert "v2" in os.readlink(updates.current_link("tiny", "onnx"))
    current, previous = updates.rollback("tiny", "onnx", "test")
    assert (current.version, previous.version) == (2, 1)
    assert "v1" in os.readlink(updates.current_link("tiny", "onnx"))
    entry = AuditLog(updates.store).entries()[-1]
    detail = json.loads(entry["detail"])
    assert entry["kind"] == "model_rollback" and detail["waiver"] == "anti-rollback"
    assert (detail["from_version"], detail["to_version"], detail["counter"]) == (2, 1, 2)
    # The counter did not move: v2 cannot be installed again, v3 can.
    with pytest.raises(EnclaveError, match="not newer than v2"):
        updates.install(_bundle(updates, tmp_path, 2))
    assert updates.install(_bundle(updates, tmp_path, 3)).previous_version == 1


def test_two_failed_loads_revert_to_the_previous_release(updates: Updates, publisher: Path, tmp_path: Path) -> None:
    updates.install(_bundle(updates, tmp_path, 1))
    updates.install(_bundle(updates, tmp_path, 2))
    # v2's weights go bad on disk after the install.
    weights = updates.release_root("tiny", "onnx") / "v2" / "model" / "model.onnx.data"
    weights.write_bytes(b"\0" * weights.stat().st_size)
    model = Catalog(updates.settings).find("tiny", "onnx")
    with pytest.raises(EnclaveError, match="does not match its manifest"):
        updates.load_guarded(model)
    loaded, engine, notices = updates.load_guarded(Catalog(updates.settings).find("tiny", "onnx"))
    engine.close()
    assert loaded.manifest["release"]["version"] == 1
    assert notices == ["tiny v2 was set aside because it failed to load twice; Enclave went back to v1."]
    assert _kinds(updates)[-1] == "model_revert"
    assert [e.kind for e in updates.releases.events()] == ["load_error", "load_error"]


def test_a_load_that_crashed_the_process_counts_at_the_next_start(
    updates: Updates, publisher: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    updates.install(_bundle(updates, tmp_path, 1))
    updates.install(_bundle(updates, tmp_path, 2))
    current = updates.releases.in_state("tiny", "onnx", "current")
    assert current is not None
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    def crashed(times: int) -> None:
        """What a process killed inside the native loader leaves: the attempt counted, its marker behind."""
        updates.releases.set_attempts(current.id, times)
        (updates.release_root("tiny", "onnx") / LOADING_MARKER).write_text(dead_pid.stdout.strip())

    crashed(1)  # one crash: noted, and the next load of v2 goes ahead
    model, engine, notices = updates.load_guarded(Catalog(updates.settings).find("tiny", "onnx"))
    engine.close()
    assert notices == [] and model.manifest["release"]["version"] == 2
    crashed(2)  # two in a row: v1 again, said plainly
    model, engine, notices = updates.load_guarded(Catalog(updates.settings).find("tiny", "onnx"))
    engine.close()
    assert model.manifest["release"]["version"] == 1 and "went back to v1" in notices[0]
    assert [e.kind for e in updates.releases.events()] == ["crash", "crash"]


def test_gpu_falls_back_to_the_cpu_and_says_so(settings: Settings, store: Store, tiny_installed: object) -> None:
    """No GPU on this machine (and the CPU build of onnxruntime-genai): the real fallback path."""
    updates = Updates(replace(settings, device="gpu"), store)
    model, engine, notices = updates.load_guarded(Catalog(settings).find("tiny", "onnx"))
    engine.close()
    assert len(notices) == 1 and "runs on the CPU instead" in notices[0]
    assert [e.kind for e in updates.releases.events()] == ["gpu_fallback"]
    assert engine.capabilities.gpu is False
