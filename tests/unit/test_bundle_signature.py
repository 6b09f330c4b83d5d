"""Bundle signatures: every change to a signed folder is named and refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfmlops.core.forecasting.bundle_signature import (
    SIGNATURE_FILE,
    BundleSignatureError,
    sign_bundle,
    verify_bundle,
)

KEY = b"a-signing-key-of-at-least-32-characters"


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    (folder / "models" / "gbm").mkdir(parents=True)
    (folder / "bundle.json").write_text('{"models": ["gbm"]}')
    (folder / "models" / "gbm" / "forecaster.pkl").write_bytes(b"\x80\x05fitted")
    sign_bundle(folder, KEY)
    return folder


def test_an_untouched_bundle_passes(signed: Path) -> None:
    verify_bundle(signed, KEY)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: (f / "models/gbm/forecaster.pkl").write_bytes(b"evil"), "altered: models/gbm"),
        (lambda f: (f / "models/gbm/extra.pkl").write_bytes(b"evil"), "added: models/gbm/extra"),
        (lambda f: (f / "bundle.json").unlink(), "removed: bundle.json"),
        (lambda f: (f / SIGNATURE_FILE).unlink(), "unsigned bundle"),
        (lambda f: (f / SIGNATURE_FILE).write_text("{"), "unreadable signature"),
    ],
)
def test_any_change_is_refused_with_what_changed(signed: Path, change, reason: str) -> None:  # type: ignore[no-untyped-def]
    change(signed)

    with pytest.raises(BundleSignatureError, match=reason):
        verify_bundle(signed, KEY)


def test_a_re_listed_file_or_another_key_fails_the_mac(signed: Path) -> None:
    with pytest.raises(BundleSignatureError, match="another key"):
        verify_bundle(signed, b"x" * 40)
    # Rewriting a file and its digest in the list, without the key, breaks the MAC.
    (signed / "models/gbm/forecaster.pkl").write_bytes(b"evil")
    signature = json.loads((signed / SIGNATURE_FILE).read_text())
    signature["files"]["models/gbm/forecaster.pkl"] = "0" * 64
    (signed / SIGNATURE_FILE).write_text(json.dumps(signature))
    with pytest.raises(BundleSignatureError, match="another key, or its file list was edited"):
        verify_bundle(signed, KEY)
