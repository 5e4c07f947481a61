"""Offline model updates: bundle, install, roll back, check drift, and load with a safety net.

A release travels as one signed bundle file (:mod:`assistant.catalog.bundles`). Installing
it goes, in this order, and stops at the first step that fails — before any engine
loads the new files in this process, and before anything in use changes:

1. **stage** the bundle into a private folder (size limit, regular files only, no links,
   no path escapes);
2. **signature**: the key the signature names must be trusted here, and the signature
   must cover exactly the staged files (model-signing, offline);
3. **release**: name, engine, expiry, minimum Enclave version, the files' sha256;
4. **anti-rollback**: the version must be higher than the highest ever installed for
   that model and engine — the counter is kept in the database *and* in the audit
   chain, so removing a model or its folders does not reset it, and an audit chain
   that does not verify stops every install;
5. **probe** in a child process (memory and time limits), which also measures the
   golden figures (:mod:`assistant.app.drift`);
6. **drift** against the current version's reference figures (from its own first
   install or build); beyond the thresholds the install stops unless ``accept_drift``;
7. **switch**: the release folder is moved into ``releases/<name>/<engine>/v<N>/``, the
   database records it as current (the old current becomes previous), and the
   ``models/<name>/<engine>`` link is replaced in one rename.

Every step's outcome is audited (signer key id, digests, drift summary). Loading goes
through :func:`load_guarded`: a current release that failed to load twice — an error
or a crash of the process, counted through a marker file — is reverted to the previous
one automatically, and the front end is told so in a sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from assistant.app import drift, power
from assistant.app.probe import ProbeRequest, probe
from assistant.catalog import bundles
from assistant.catalog.manifests import MANIFEST_NAME, Catalog, InstalledModel, hash_model
from assistant.core.errors import EnclaveError, EngineUnavailable
from assistant.core.settings import Settings
from assistant.engines import ENGINE_NAMES, load_engine
from assistant.engines.base import Engine
from assistant.signing import SignatureError, find_own_key, sign_folder, signature_key_id, verify_folder
from assistant.storage.audit import AuditLog
from assistant.storage.database import Store
from assistant.storage.releases import Release, Releases

#: Failed loads of a current release before Enclave reverts to the previous one.
MAX_FAILED_LOADS = 2
#: The file a load in progress keeps in its release folder (:meth:`Updates.release_root`),
#: holding the loading process's id: found with that process gone, the load crashed it.
LOADING_MARKER = "loading"
Progress = Callable[[str], None]


class UpdateError(EnclaveError):
    """An update step refused the bundle; nothing in use was changed."""


class DriftBlocked(UpdateError):
    """The new version drifted beyond the thresholds (``--accept-drift`` installs it anyway)."""

    exit_code = 3


def _noop(_: str) -> None:
    return None


def enclave_version() -> str:
    try:
        return dist_version("enclave")
    except PackageNotFoundError:  # pragma: no cover - always installed, at least editable
        return "0"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class BundleResult:
    path: Path
    bytes: int
    name: str
    engine: str
    version: int
    signer: str
    sha256: str
    seconds: float


@dataclass(frozen=True)
class InstallResult:
    name: str
    engine: str
    version: int
    previous_version: int | None
    signer: str
    sha256: str
    drift: drift.DriftReport | None
    accepted_drift: bool
    seconds: float
    probe_load_s: float
    steps: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "version": self.version,
            "previous_version": self.previous_version,
            "signer": self.signer,
            "sha256": self.sha256,
            "drift": self.drift.as_dict() if self.drift else None,
            "accepted_drift": self.accepted_drift,
            "seconds": round(self.seconds, 2),
            "probe_load_s": round(self.probe_load_s, 2),
            "steps": list(self.steps),
        }


@dataclass(frozen=True)
class CheckResult:
    name: str
    engine: str
    sha256: str
    figures: drift.Figures
    report: drift.DriftReport | None  # None: no reference yet, this run became it
    reference_origin: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "sha256": self.sha256,
            "engine_build": self.figures.engine_build,
            "perplexity": self.figures.perplexity,
            "seconds": round(self.figures.seconds, 2),
            "reference": self.reference_origin,
            "drift": self.report.as_dict() if self.report else None,
        }


# --------------------------------------------------------------------------- the service
class Updates:
    """Model releases for one settings tree and database."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.catalog = Catalog(settings)
        self.releases = Releases(store)
        self.audit = AuditLog(store)

    # -- paths
    def release_root(self, name: str, engine: str) -> Path:
        return self.settings.locations.releases / name / engine

    def current_link(self, name: str, engine: str) -> Path:
        return self.catalog.install_dir(name, engine)

    # -- bundle
    def bundle(
        self,
        name: str,
        engine: str | None,
        version: int,
        output: Path,
        *,
        key: str | None = None,
        expires: str | None = None,
        notes: str = "",
        min_enclave: str | None = None,
    ) -> BundleResult:
        """Write installed model ``name`` as a signed bundle ``output``."""
        started = time.perf_counter()
        if version < 1:
            raise UpdateError("A release version is a whole number of 1 or more.", "Use --version 1 for the first.")
        model = self.catalog.find(name, engine)
        if model.kind == "embedding":
            raise UpdateError(f"{name} is the document-search encoder; only chat models are bundled.", "")
        problems = self.catalog.verify(model, full=True)
        if problems:
            raise UpdateError(
                f"{model.name} ({model.engine}) does not match its manifest: {'; '.join(problems[:3])}.",
                "A damaged model is never bundled. " + self.catalog.repair_hint(model),
            )
        signer = find_own_key(self.settings.locations.config, key)
        files: list[tuple[str, Path]] = []
        for rel in sorted(model.manifest.get("files", {})):
            files.append((rel, model.path if model.path.is_file() else model.path / rel))
        facts: dict[str, Any] = {k: model.manifest[k] for k in ("chat", "kind", "licence", "context_length", "title", "source", "build")
                 if k in model.manifest}  # fmt: skip
        if model.engine == "litert":
            facts["file"] = model.path.name if model.path.is_file() else str(model.manifest["file"])
        release = bundles.ReleaseInfo(
            name=model.name,
            engine=model.engine,
            version=version,
            released=bundles.utc_now(),
            source_sha256=model.sha256,
            min_enclave=min_enclave or enclave_version(),
            expires=expires,
            notes=notes,
            model=facts,
        )
        work = self.settings.locations.cache / "bundle-work" / f"{model.name}-{model.engine}-{os.getpid()}"
        size = bundles.write_bundle(output, release, files, lambda folder, sig: sign_folder(folder, sig, signer), work)
        from assistant.catalog.manifests import sha256_file

        digest = sha256_file(output)
        self.audit.record(
            "model_bundle", model=model.name, engine=model.engine, version=version, signer=signer.id,
            model_sha256=model.sha256, bundle_sha256=digest, bytes=size, to=str(output),
        )  # fmt: skip
        return BundleResult(output, size, model.name, model.engine, version, signer.id, digest,
                            time.perf_counter() - started)  # fmt: skip

    # -- install
    def highest_version(self, name: str, engine: str) -> int:
        """The anti-rollback counter: the highest version the database or the audit chain has seen."""
        highest = self.releases.highest(name, engine)
        for entry in self.audit.entries():
            if entry["kind"] == "model_install":
                detail = json.loads(entry["detail"])
                if detail.get("model") == name and detail.get("engine") == engine:
                    highest = max(highest, int(detail.get("version", 0)))
        return highest

    def install(self, source: Path, *, accept_drift: bool = False, progress: Progress = _noop) -> InstallResult:
        """Install the bundle (file or folder) ``source``; see the module docstring for the steps."""
        started = time.perf_counter()
        steps: list[str] = []
        source = source.expanduser()
        staging_root = self.settings.locations.releases / ".staging"
        staging = staging_root / f"{os.getpid()}-{time.time_ns()}"
        progress("Unpacking the bundle")
        try:
            try:
                staged = bundles.stage(source, staging, self.settings.bundle_max_mb << 20)
            except EnclaveError as exc:
                self._refused(source, "stage", exc)
                raise
            try:
                return self._install_staged(source, staged, accept_drift, progress, steps, started)
            finally:
                staged.discard()
        finally:
            if staging_root.is_dir() and not any(staging_root.iterdir()):
                staging_root.rmdir()

    def _refused(self, source: Path, step: str, exc: EnclaveError, **detail: Any) -> None:
        self.audit.record("model_install_refused", source=str(source), step=step, reason=exc.message, **detail)

    def _install_staged(
        self,
        source: Path,
        staged: bundles.Staged,
        accept_drift: bool,
        progress: Progress,
        steps: list[str],
        started: float,
    ) -> InstallResult:
        steps.append(f"staged {staged.bytes} bytes")
        progress("Checking the signature")
        try:
            signer = signature_key_id(staged.signature)
            trusted = {k.id: k for k in self.releases.trusted_keys()}
            if signer not in trusted:
                raise SignatureError(
                    f"The bundle is signed by key {signer[:16]}…, which this machine does not trust.",
                    "If you know the publisher, check the key's fingerprint with them and run "
                    "`enclave keys trust THEIR_KEY.pub`.",
                )
            verify_folder(staged.payload, staged.signature, trusted[signer].public_pem)
        except EnclaveError as exc:
            self._refused(source, "signature", exc)
            raise
        steps.append(f"signature by {trusted[signer].name} ({signer[:16]}…) verified")
        try:
            release = staged.release()
        except EnclaveError as exc:
            self._refused(source, "release", exc, signer=signer)
            raise
        detail = {"model": release.name, "engine": release.engine, "version": release.version, "signer": signer}
        try:
            self._check_release(release, staged)
        except EnclaveError as exc:
            self._refused(source, "release", exc, **detail)
            raise
        steps.append(f"release {release.name} ({release.engine}) v{release.version}")
        highest = self.highest_version(release.name, release.engine)
        problems = self.audit.verify()
        if problems:
            refusal = UpdateError(
                f"The audit log does not verify ({problems[0]}), so the anti-rollback counter cannot be trusted.",
                "Run `enclave audit verify` and restore the database from a backup before installing updates.",
            )
            self._refused(source, "counter", refusal, **detail)
            raise refusal
        if release.version <= highest:
            refusal = UpdateError(
                f"{release.name} ({release.engine}) v{release.version} is not newer than v{highest}, "
                "the highest version installed here before.",
                "Installing an older or equal version is refused (anti-rollback). To go back to the previous "
                f"version use `enclave models rollback {release.name}`.",
            )
            self._refused(source, "counter", refusal, highest=highest, **detail)
            raise refusal
        steps.append(f"version {release.version} > {highest} (highest so far)")

        progress("Loading it in a test process")
        request = ProbeRequest(
            name=release.name,
            engine=release.engine,
            path=str(staged.model),
            file=release.model.get("file"),
            context_length=int(release.model.get("context_length") or self.settings.context_window),
            device=self.settings.device,
            threads=self.settings.threads,
        )
        try:
            probed = probe(request)
        except EnclaveError as exc:
            self._refused(source, "probe", exc, **detail)
            self.audit.record("model_probe", ok=False, reason=exc.message, **detail)
            raise
        self.audit.record("model_probe", ok=True, load_s=round(probed.load_s, 3), **detail)
        steps.append(f"probe-loaded in a child process ({probed.load_s:.2f} s)")
        assert probed.figures is not None
        figures = drift.Figures.from_dict(probed.figures)

        progress("Comparing it with the current version (drift)")
        report: drift.DriftReport | None = None
        current = self._current_model(release.name, release.engine)
        if current is not None:
            reference = self.reference_for(current)
            report = drift.compare(reference, figures, self.settings)
            steps.append(f"drift vs current: {report.summary()}")
            if report.blocking and not accept_drift:
                blocked = DriftBlocked(
                    f"{release.name} v{release.version} drifted from the version in use: {'; '.join(report.reasons)}.",
                    "Nothing was changed. Check the new version, then install it with --accept-drift if it is intended.",
                )
                self._refused(source, "drift", blocked, drift=report.summary(), **detail)
                raise blocked
        else:
            steps.append("no current version: these figures become the reference")

        progress("Switching to the new version")
        previous = self.releases.in_state(release.name, release.engine, "current")
        if previous is None and current is not None:
            previous = self._adopt_local(current)
        target = self._move_into_place(staged, release)
        info = {
            **release.model,
            "release": {"version": release.version, "signer": signer, "released": release.released,
                        "expires": release.expires, "notes": release.notes},
        }  # fmt: skip
        model = self.catalog.write_manifest(release.name, release.engine, target / bundles.MODEL, info)
        self.releases.add_release(
            name=release.name, engine=release.engine, version=release.version, sha256=model.sha256,
            signer=signer, released=release.released, path=str(target), release=release.as_dict(),
        )  # fmt: skip
        self.releases.save_drift_reference(
            release.name, release.engine, model.sha256, figures.engine_build, "install", figures.as_dict()
        )
        self._point_current(release.name, release.engine, target / bundles.MODEL)
        self.audit.record(
            "model_install", model=release.name, engine=release.engine, version=release.version, signer=signer,
            sha256=model.sha256, previous_version=previous.version if previous else None,
            drift=report.summary() if report else "no current version", accepted_drift=bool(report and report.blocking),
        )  # fmt: skip
        steps.append(f"current → v{release.version}" + (f", previous → v{previous.version}" if previous else ""))
        return InstallResult(
            name=release.name,
            engine=release.engine,
            version=release.version,
            previous_version=previous.version if previous else None,
            signer=signer,
            sha256=model.sha256,
            drift=report,
            accepted_drift=bool(report and report.blocking),
            seconds=time.perf_counter() - started,
            probe_load_s=probed.load_s,
            steps=tuple(steps),
        )

    def _check_release(self, release: bundles.ReleaseInfo, staged: bundles.Staged) -> None:
        from assistant.catalog.manifests import slug

        if release.engine not in ENGINE_NAMES:
            raise UpdateError(
                f"The bundle is for an unknown engine {release.engine!r}.", f"Engines: {', '.join(ENGINE_NAMES)}."
            )
        if slug(release.name) != release.name:
            raise UpdateError(f"{release.name!r} is not a valid model name.", "Re-make the bundle.")
        if release.expires and release.expires < bundles.utc_now()[: len(release.expires)]:
            raise UpdateError(f"This release expired on {release.expires}.", "Ask its publisher for a current one.")
        if _version_tuple(release.min_enclave) > _version_tuple(enclave_version()):
            raise UpdateError(
                f"This release needs Enclave {release.min_enclave} or newer; this is {enclave_version()}.",
                "Update Enclave first.",
            )
        actual = hash_model(staged.model)["sha256"]
        if actual != release.source_sha256:
            raise UpdateError(
                "The model files do not have the sha256 the release names.", "Re-make the bundle from an intact model."
            )

    def _current_model(self, name: str, engine: str) -> InstalledModel | None:
        try:
            model = self.catalog.find(name, engine)
        except EnclaveError:
            return None
        return model if model.engine == engine else None

    def reference_for(self, model: InstalledModel) -> drift.Figures:
        """The reference figures of an installed build: stored ones, or measured now (then stored)."""
        build = drift.engine_build(model.engine, self.settings.device)
        stored = self.releases.drift_reference(model.name, model.engine, model.sha256, build)
        stored = stored or self.releases.drift_reference(model.name, model.engine, model.sha256)
        if stored is not None:
            return drift.Figures.from_dict(stored)
        figures = self.measure(model)
        self.releases.save_drift_reference(model.name, model.engine, model.sha256, figures.engine_build, "check",
                                           figures.as_dict())  # fmt: skip
        return figures

    def measure(self, model: InstalledModel) -> drift.Figures:
        """The golden figures of an installed model, measured in a child process."""
        folder = model.path.parent if model.path.is_file() else model.path
        file = model.path.name if model.path.is_file() else model.manifest.get("file")
        request = ProbeRequest(
            name=model.name, engine=model.engine, path=str(folder), file=file,
            context_length=int(model.manifest.get("context_length") or self.settings.context_window),
            device=self.settings.device, threads=self.settings.threads,
        )  # fmt: skip
        result = probe(request)
        assert result.figures is not None
        return drift.Figures.from_dict(result.figures)

    def record_reference(self, model: InstalledModel, origin: str) -> drift.Figures:
        """Store ``model``'s golden figures as its reference (at build time, or a first check)."""
        figures = self.measure(model)
        self.releases.save_drift_reference(model.name, model.engine, model.sha256, figures.engine_build, origin,
                                           figures.as_dict())  # fmt: skip
        return figures

    def check(self, name: str, engine: str | None = None) -> CheckResult:
        """Measure the golden set on the installed model now and compare with its reference."""
        model = self.catalog.find_language_model(name, engine)
        self.catalog.check_before_load(model)
        build = drift.engine_build(model.engine, self.settings.device)
        stored = self.releases.drift_reference(model.name, model.engine, model.sha256, build)
        stored = stored or self.releases.drift_reference(model.name, model.engine, model.sha256)
        figures = self.measure(model)
        if stored is None:
            self.releases.save_drift_reference(model.name, model.engine, model.sha256, figures.engine_build, "check",
                                               figures.as_dict())  # fmt: skip
            result = CheckResult(model.name, model.engine, model.sha256, figures, None, None)
        else:
            report = drift.compare(drift.Figures.from_dict(stored), figures, self.settings)
            result = CheckResult(model.name, model.engine, model.sha256, figures, report, str(stored["origin"]))
        self.audit.record(
            "model_check", model=model.name, engine=model.engine, sha256=model.sha256,
            drift=result.report.summary() if result.report else "reference recorded",
        )  # fmt: skip
        return result

    # -- switching
    def _adopt_local(self, current: InstalledModel) -> Release | None:
        """A model built or added here (a real folder, not a release) becomes release v0, so
        that the first installed version has a previous one to roll back to."""
        link = self.current_link(current.name, current.engine)
        if link.is_symlink() or not link.is_dir():
            return None
        root = self.release_root(current.name, current.engine)
        target = root / "v0"
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        os.replace(link, target / bundles.MODEL)
        model = self.catalog.read_manifest(target / bundles.MODEL / MANIFEST_NAME, current.name, current.engine)
        self.releases.add_release(
            name=current.name, engine=current.engine, version=0, sha256=model.sha256, signer="local",
            released=str(current.manifest.get("built_at") or bundles.utc_now()), path=str(target),
            release={"name": current.name, "engine": current.engine, "version": 0, "origin": "built or added here"},
        )  # fmt: skip
        self._point_current(current.name, current.engine, target / bundles.MODEL)
        return self.releases.in_state(current.name, current.engine, "current")

    def _move_into_place(self, staged: bundles.Staged, release: bundles.ReleaseInfo) -> Path:
        root = self.release_root(release.name, release.engine)
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"v{release.version}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        os.replace(staged.model, target / bundles.MODEL)
        os.replace(staged.payload / bundles.RELEASE, target / bundles.RELEASE)
        os.replace(staged.signature, target / bundles.SIGNATURE)
        return target

    def _point_current(self, name: str, engine: str, folder: Path) -> None:
        """Make ``models/<name>/<engine>`` link to ``folder``, in one rename."""
        link = self.current_link(name, engine)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.relpath(folder, link.parent), tmp)
        os.replace(tmp, link)

    def reconcile(self, name: str, engine: str) -> None:
        """After a crash between the database and the link, make the link follow the database."""
        current = self.releases.in_state(name, engine, "current")
        if current is None:
            return
        folder = Path(current.path) / bundles.MODEL
        link = self.current_link(name, engine)
        if folder.is_dir() and (not link.is_symlink() or link.resolve() != folder.resolve()):
            if link.is_symlink() or not link.exists():
                self._point_current(name, engine, folder)

    # -- rollback
    def rollback_target(self, name: str, engine: str | None) -> tuple[Release, Release]:
        """The (current, previous) pair a rollback would swap; raises when there is none."""
        engines = [engine] if engine else [e for e in ENGINE_NAMES if self.releases.in_state(name, e, "current")]
        if not engines:
            raise UpdateError(f"{name} has no installed releases.", "Only models installed from bundles can roll back.")
        if len(engines) > 1:
            raise UpdateError(f"{name} has releases for {', '.join(engines)}.", "Choose one with --engine.")
        eng = engines[0]
        current = self.releases.in_state(name, eng, "current")
        previous = self.releases.in_state(name, eng, "previous")
        if current is None or previous is None or not (Path(previous.path) / bundles.MODEL).is_dir():
            raise UpdateError(f"{name} ({eng}) has no previous version to go back to.", "")
        return current, previous

    def rollback(
        self, name: str, engine: str | None, how: str, *, automatic: bool = False, reason: str = ""
    ) -> tuple[Release, Release]:
        """Go back to the previous version: an explicit, audited waiver of the anti-rollback rule
        (the counter keeps its value, so the next install must still be newer)."""
        current, previous = self.rollback_target(name, engine)
        self.releases.swap_current_previous(current.name, current.engine)
        self._point_current(current.name, current.engine, Path(previous.path) / bundles.MODEL)
        self.audit.record(
            "model_revert" if automatic else "model_rollback", model=current.name, engine=current.engine,
            from_version=current.version, to_version=previous.version, waiver="anti-rollback", how=how,
            reason=reason, counter=self.releases.highest(current.name, current.engine),
        )  # fmt: skip
        return current, previous

    # -- loading
    def _marker(self, name: str, engine: str) -> Path:
        return self.release_root(name, engine) / LOADING_MARKER

    def load_guarded(self, model: InstalledModel) -> tuple[InstalledModel, Engine, list[str]]:
        """Load ``model`` (checked against its manifest) with the power profile and device of
        the settings. Counts failed loads of a current release — errors, and crashes of the
        process found at the next start — and after :data:`MAX_FAILED_LOADS` reverts to the
        previous release and loads that, with a notice saying so."""
        notices: list[str] = []
        settings = power.apply(self.settings)
        self.reconcile(model.name, model.engine)
        release = self.releases.in_state(model.name, model.engine, "current")
        if release is None:
            self.catalog.check_before_load(model)
            return model, self._load_on_device(model, settings, notices), notices
        marker = self._marker(model.name, model.engine)
        attempts = release.load_attempts
        if marker.exists() and not _alive(marker):
            marker.unlink(missing_ok=True)
            self.releases.record_event(model.name, model.engine, release.sha256, "crash",
                                       f"v{release.version} stopped the process while loading")  # fmt: skip
        if attempts >= MAX_FAILED_LOADS and self.releases.in_state(model.name, model.engine, "previous"):
            return self._revert_and_load(model, release, settings, notices, "it failed to load twice")
        self.releases.set_attempts(release.id, attempts + 1)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()), encoding="utf-8")
        try:
            self.catalog.check_before_load(model)
            engine = self._load_on_device(model, settings, notices)
        except EnclaveError as exc:
            marker.unlink(missing_ok=True)
            self.releases.record_event(model.name, model.engine, release.sha256, "load_error", exc.message)
            if attempts + 1 >= MAX_FAILED_LOADS and self.releases.in_state(model.name, model.engine, "previous"):
                return self._revert_and_load(model, release, settings, notices, "it failed to load twice")
            raise
        marker.unlink(missing_ok=True)
        self.releases.set_attempts(release.id, 0)
        return model, engine, notices

    def _revert_and_load(
        self, model: InstalledModel, failed: Release, settings: Settings, notices: list[str], why: str
    ) -> tuple[InstalledModel, Engine, list[str]]:
        _, previous = self.rollback(model.name, model.engine, "automatic", automatic=True, reason=why)
        notices.append(
            f"{model.name} v{failed.version} was set aside because {why}; Enclave went back to v{previous.version}."
        )
        reverted = self.catalog.find(model.name, model.engine)
        self.catalog.check_before_load(reverted)
        return reverted, self._load_on_device(reverted, settings, notices), notices

    def _load_on_device(self, model: InstalledModel, settings: Settings, notices: list[str]) -> Engine:
        def fell_back(exc: EngineUnavailable) -> None:
            self.releases.record_event(model.name, model.engine, model.sha256, "gpu_fallback", exc.message)

        return _on_device(model, settings, notices, fell_back)


def load_unrecorded(settings: Settings, model: InstalledModel) -> tuple[Engine, list[str]]:
    """Load ``model`` (checked against its manifest, power profile and device applied)
    when the database cannot be written (a full disk): no release bookkeeping, so a
    question that saves nothing (``ask --no-save``) can still be answered."""
    notices: list[str] = []
    settings = power.apply(settings)
    Catalog(settings).check_before_load(model)
    return _on_device(model, settings, notices, lambda exc: None), notices


def _on_device(
    model: InstalledModel, settings: Settings, notices: list[str], fell_back: Callable[[EngineUnavailable], None]
) -> Engine:
    if settings.device == "gpu":
        try:
            return load_engine(model, settings, "gpu")
        except EngineUnavailable as exc:
            fell_back(exc)
            notices.append(f"The GPU could not be used ({exc.message}); {model.name} runs on the CPU instead.")
            return load_engine(model, replace(settings, device="cpu"), "cpu")
    return load_engine(model, settings, "cpu")


def _alive(marker: Path) -> bool:
    """Is the process that wrote ``marker`` still running (another Enclave loading now)?"""
    try:
        pid = int(marker.read_text(encoding="utf-8").strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_model(settings: Settings, store: Store, name: str, engine: str | None) -> list[InstalledModel]:
    """Delete an installed model (and, for installed releases, every kept version). The
    anti-rollback counter is kept: a removed model cannot come back at an older version."""
    removed = Catalog(settings).remove(name, engine)
    releases = Releases(store)
    with store.transaction() as db:
        for model in removed:
            db.execute(
                "update model_releases set state = 'retired' where name = ? and engine = ?", [model.name, model.engine]
            )
    for model in removed:
        AuditLog(store).record("model_remove", model=model.name, engine=model.engine, sha256=model.sha256,
                               counter=releases.highest(model.name, model.engine))  # fmt: skip
    return removed
