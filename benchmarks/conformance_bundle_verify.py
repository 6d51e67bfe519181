"""Score `trust verify-blob` on sigstore-conformance's bundle-verify cases (tests/vectors/).

Prints one line per case (ok/MISS, exit code, why) and the score N/70. A case without its own
trusted_root.json uses the public-good production root
(production_trusted_root.json, from sigstore-python's embedded roots).
Usage: python benchmarks/conformance_bundle_verify.py [path/to/trust]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).resolve().parent.parent / "tests/vectors/sigstore-conformance/bundle-verify"
IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"


def command(trust: str, case: Path) -> list[str]:
    """The verify-blob command for one case."""
    root = case / "trusted_root.json"
    if not root.exists():
        root = CASES.parent / "production_trusted_root.json"
    artifact = case / "artifact" if (case / "artifact").exists() else CASES / "a.txt"
    cmd = [trust, "verify-blob", str(artifact), "--bundle", str(case / "bundle.sigstore.json")]
    cmd += ["--trusted-root", str(root)]
    if (case / "key.pub").exists():
        return [*cmd, "--key", str(case / "key.pub")]
    identity = (case / "identity").read_text().strip() if (case / "identity").exists() else IDENTITY
    issuer = (case / "issuer").read_text().strip() if (case / "issuer").exists() else ISSUER
    return [*cmd, "--certificate-identity", identity, "--certificate-oidc-issuer", issuer]


def main() -> int:
    beside = Path(sys.executable).with_name("trust")  # the venv's, when run with its python
    trust = sys.argv[1] if len(sys.argv) > 1 else str(beside) if beside.exists() else "trust"
    cases = sorted(p for p in CASES.iterdir() if p.is_dir())
    passed = 0
    for case in cases:
        want_ok = not case.name.endswith("_fail")
        cmd = command(trust, case)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if (run.returncode == 0) == want_ok:
            passed += 1
            print(f"ok   {case.name} (exit {run.returncode})")
        else:
            why = run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
            print(f"MISS {case.name}: exit {run.returncode}, want {'0' if want_ok else 'non-zero'}: {why[0]}")
    print(f"score: {passed}/{len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
