"""sigstore-conformance's 70 bundle-verify cases (vendored in tests/vectors/sigstore-conformance, see NOTICE):
`trust verify-blob` must verify every case whose name does not end in _fail and reject (exit 3, or 2/4 for
a bundle it cannot read) every case that does. Offline: each case's trusted_root.json, else the
production root."""

from __future__ import annotations

from pathlib import Path

import pytest

from trust.cli.app import main

VECTORS = Path(__file__).parent / "vectors/sigstore-conformance"
CASES = VECTORS / "bundle-verify"
IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"


def _args(case: Path) -> list[str]:
    root = case / "trusted_root.json"
    if not root.exists():
        root = VECTORS / "production_trusted_root.json"
    artifact = case / "artifact" if (case / "artifact").exists() else CASES / "a.txt"
    args = ["verify-blob", str(artifact), "--bundle", str(case / "bundle.sigstore.json")]
    args += ["--trusted-root", str(root)]
    if (case / "key.pub").exists():
        return [*args, "--key", str(case / "key.pub")]
    identity = (case / "identity").read_text().strip() if (case / "identity").exists() else IDENTITY
    issuer = (case / "issuer").read_text().strip() if (case / "issuer").exists() else ISSUER
    return [*args, "--certificate-identity", identity, "--certificate-oidc-issuer", issuer]


def test_all_seventy_cases_are_vendored() -> None:
    assert len([p for p in CASES.iterdir() if p.is_dir()]) == 70


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_bundle_verify_case(name: str) -> None:
    code = main(_args(CASES / name))
    if name.endswith("_fail"):
        assert code in (2, 3, 4)
    else:
        assert code == 0
