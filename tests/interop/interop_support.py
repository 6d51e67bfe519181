"""Helpers of the interop tests: run a peer or trust and keep its output for the failure message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TRUST = str(Path(sys.executable).parent / "trust")


def run(command: list[str], env: dict[str, str], *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `command`; with `ok`, fail the test with its output when it exits non-zero."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if ok:
        assert result.returncode == 0, f"{' '.join(command[:3])} failed:\n{result.stdout}\n{result.stderr}"
    return result
