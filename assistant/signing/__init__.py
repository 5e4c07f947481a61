"""Signing keys and signatures over model folders (OpenSSF model-signing).

A signing key is an ECDSA P-256 pair — the curve model-signing and Sigstore's bundle
format name first. Its **id** is the sha256 of the public key in PEM
(SubjectPublicKeyInfo): the same value model-signing writes into every signature as
the key hint, so a signature names the key that made it before anything is verified.

Own keys live in ``<config>/keys/``: ``NAME.pub``, and ``NAME.key`` (mode 0600, in a
0700 folder) unless the private key was put in the system keyring (service
``enclave-signing``, user = the key id). Which keys are *trusted* is kept in the
database (``trusted_keys``), so trusting one is audited like any other change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.core.errors import EnclaveError

KEYRING_SERVICE = "enclave-signing"
KeyStore = Literal["file", "keyring"]


class SignatureError(EnclaveError):
    """A signature is missing, malformed, by an unknown key, or does not match the files."""


@dataclass(frozen=True)
class SigningKey:
    """One of this machine's own signing keys."""

    id: str
    name: str
    public_path: Path
    private_path: Path | None  # None when the private key is in the keyring
    store: KeyStore

    @property
    def short_id(self) -> str:
        return self.id[:16]


def key_dir(config: Path) -> Path:
    return config / "keys"


def key_id(public_pem: bytes) -> str:
    """The key's id: sha256 of its PEM public key, as model-signing's key hint."""
    return hashlib.sha256(public_pem).hexdigest()


def normalise_public_key(data: bytes) -> bytes:
    """The PEM (SubjectPublicKeyInfo) of a public key file, checked to be an ECDSA key on a
    curve model-signing supports. Raises :class:`SignatureError` otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(
            "That file is not a PEM public key.", "Give the NAME.pub file that `enclave keys create` wrote."
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise SignatureError(
            "Only ECDSA P-256, P-384 or P-521 public keys can sign model bundles.",
            "Create a key with `enclave keys create`.",
        )
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def create_key(config: Path, name: str, *, keyring: bool = False) -> SigningKey:
    """Make a new P-256 key pair called ``name``; the private key goes to a 0600 file, or
    to the system keyring with ``keyring``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise EnclaveError(f"{name!r} cannot name a key.", "Use letters, digits, dashes and dots.")
    folder = key_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    public_path = folder / f"{name}.pub"
    private_path = folder / f"{name}.key"
    if public_path.exists() or private_path.exists():
        raise EnclaveError(f"A key called {name!r} exists already.", "Choose another --name.")
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ident = key_id(public_pem)
    if keyring:
        _keyring_set(ident, private_pem.decode("ascii"))
        stored: Path | None = None
    else:
        # Created with mode 0600 from the start: never readable by others, not even briefly.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        stored = private_path
    public_path.write_bytes(public_pem)
    return SigningKey(ident, name, public_path, stored, "keyring" if keyring else "file")


def own_keys(config: Path) -> list[SigningKey]:
    """This machine's signing keys (those with a public key file in the key folder)."""
    folder = key_dir(config)
    found = []
    for public in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        private = public.with_suffix(".key")
        pem = public.read_bytes()
        found.append(
            SigningKey(
                key_id(pem),
                public.stem,
                public,
                private if private.exists() else None,
                "file" if private.exists() else "keyring",
            )  # fmt: skip
        )
    return found


def find_own_key(config: Path, name: str | None) -> SigningKey:
    """The key called ``name`` (or the only key there is)."""
    keys = own_keys(config)
    if name is not None:
        for key in keys:
            if key.name == name or key.id.startswith(name):
                return key
        raise EnclaveError(f"No signing key is called {name!r}.", "See `enclave keys list`.")
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise EnclaveError("There is no signing key on this machine yet.", "Create one with `enclave keys create`.")
    raise EnclaveError(
        f"There are {len(keys)} signing keys; which one signs?",
        f"Name one with --key ({', '.join(k.name for k in keys)}).",
    )


def _keyring_set(ident: str, secret: str) -> None:
    from assistant.storage import crypt

    if crypt.keyring_backend() is None:
        raise EnclaveError(
            "There is no system keyring on this machine.", "Keep the key in a file: run without --keyring."
        )
    import keyring

    keyring.set_password(KEYRING_SERVICE, ident, secret)


def _private_pem(key: SigningKey) -> bytes:
    if key.private_path is not None:
        mode = key.private_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise EnclaveError(
                f"The private key {key.private_path} can be read by other users (mode {mode:o}).",
                f"Restrict it with `chmod 600 {key.private_path}`.",
            )
        return key.private_path.read_bytes()
    import keyring

    secret = keyring.get_password(KEYRING_SERVICE, key.id)
    if not secret:
        raise EnclaveError(
            f"The private key of {key.name!r} is not in the system keyring.", "Only its public half is on this machine."
        )
    return secret.encode("ascii")


# --------------------------------------------------------------------------- signatures
def sign_folder(folder: Path, signature: Path, key: SigningKey) -> None:
    """Sign every file under ``folder`` into ``signature`` (a Sigstore bundle, model-signing's format)."""
    from model_signing import hashing, signing

    pem = _private_pem(key)
    # model-signing reads the key from a path: a private temporary file (0600, deleted at once).
    with tempfile.TemporaryDirectory(prefix="enclave-sign-") as tmp:
        path = Path(tmp) / "key.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        # model-signing's API is not annotated.
        config = signing.Config().use_elliptic_key_signer(private_key=path)  # type: ignore[no-untyped-call]
        config.set_hashing_config(hashing.Config().use_file_serialization(hashing_algorithm="sha256"))  # type: ignore[no-untyped-call]
        config.sign(folder, signature)


def signature_key_id(signature: Path) -> str:
    """The key id a signature names (its key hint), read without verifying anything."""
    try:
        bundle: dict[str, Any] = json.loads(signature.read_text(encoding="utf-8"))
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SignatureError(
            "The bundle's signature is unreadable or not a model-signing signature.",
            "The file is damaged or was not made by `enclave models bundle`.",
        ) from exc
    if not isinstance(hint, str) or len(hint) != 64:
        raise SignatureError("The bundle's signature names no signing key.", "Re-sign it with `enclave models bundle`.")
    return hint


def verify_folder(folder: Path, signature: Path, public_pem: str) -> None:
    """Check that ``signature`` was made by ``public_pem`` over exactly the files under
    ``folder`` (nothing extra, nothing missing, every byte). Raises :class:`SignatureError`."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="enclave-verify-") as tmp:
        pub = Path(tmp) / "key.pub"
        pub.write_text(public_pem, encoding="ascii")
        try:
            verifier = verifying.Config().use_elliptic_key_verifier(public_key=pub)  # type: ignore[no-untyped-call]
            verifier.verify(folder, signature)
        except Exception as exc:
            raise SignatureError(
                f"The signature does not match the bundle's files: {_mismatch(exc)}.",
                "The bundle was changed after it was signed; get an intact copy from its publisher.",
            ) from exc


def _mismatch(exc: BaseException) -> str:
    """model-signing's mismatch report in a sentence: which files changed, appeared or went missing."""
    import re

    text = str(exc)
    # The report is a list's repr: a name may sit in escaped quotes (\\'name\\').
    changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)", text)
    extra = re.findall(r"Extra files found in model '[^']*': ([^\"\]]+)", text)
    missing = re.findall(r"Missing files in model '[^']*': ([^\"\]]+)", text)
    parts = [f"{label} {', '.join(found)}" for label, found in
             (("changed:", changed), ("not signed:", extra), ("missing:", missing)) if found]  # fmt: skip
    return "; ".join(parts) if parts else _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"
