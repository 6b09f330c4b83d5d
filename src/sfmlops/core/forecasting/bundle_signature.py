"""Signed bundles: an HMAC over every file of a bundle folder, checked before anything is unpickled.

A bundle's models are pickles, and unpickling runs code: whoever can write to the registry's
artifact store could otherwise run code in every API replica. Training signs the folder with a
key only it and the loaders hold (`SFMLOPS_MODEL_SIGNING_KEY`); a loader recomputes the digest of
every file and refuses the folder when a file was altered, added or removed, or when the
signature is missing or made with another key.

The signature file lists each file's SHA-256 and an HMAC-SHA256 over that list, so a refusal
can name the file that changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

SIGNATURE_FILE = "signature.json"
ALGORITHM = "HMAC-SHA256"


class BundleSignatureError(ValueError):
    """A bundle folder is unsigned, altered, or signed with another key: it must not be loaded."""


def sign_bundle(folder: Path, key: bytes) -> None:
    """Write `folder`/signature.json over every file now in `folder`.

    Raises:
        BundleSignatureError: The folder holds a symbolic link (it could point anywhere).
    """
    files = _file_digests(folder)
    signature = {"algorithm": ALGORITHM, "files": files, "mac": _mac(files, key)}
    (folder / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2, sort_keys=True))


def verify_bundle(folder: Path, key: bytes) -> None:
    """Check `folder` against its signature; return only if every file is as signed.

    Raises:
        BundleSignatureError: No signature, a signature made with another key or edited, or a
            file altered, added or removed since signing; the message says which.
    """
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        raise BundleSignatureError(f"{folder}: unsigned bundle ({SIGNATURE_FILE} missing)")
    try:
        signature = json.loads(path.read_text())
        signed = signature["files"]
        mac = signature["mac"]
        if signature.get("algorithm") != ALGORITHM or not isinstance(signed, dict):
            raise TypeError(f"algorithm {signature.get('algorithm')!r}")
        expected = _mac(signed, key)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleSignatureError(f"{path}: unreadable signature ({error})") from error
    if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
        raise BundleSignatureError(
            f"{folder}: signature does not match (made with another key, or its file list was edited)"
        )
    actual = _file_digests(folder)
    changed = sorted(name for name in signed.keys() & actual.keys() if signed[name] != actual[name])
    added = sorted(actual.keys() - signed.keys())
    removed = sorted(signed.keys() - actual.keys())
    if changed or added or removed:
        parts = [
            f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            for label, names in (("altered", changed), ("added", added), ("removed", removed))
            if names
        ]
        raise BundleSignatureError(
            f"{folder}: files differ from the signed bundle ({'; '.join(parts)})"
        )


def _file_digests(folder: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise BundleSignatureError(f"{path}: symbolic link in a bundle")
        if not path.is_file() or path == folder / SIGNATURE_FILE:
            continue
        digests[path.relative_to(folder).as_posix()] = _sha256(path)
    return digests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mac(files: dict[str, str], key: bytes) -> str:
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()
