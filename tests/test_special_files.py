"""Nothing blocks on a special file: a FIFO (or a device, a socket, a directory) given where a file
is expected is refused before any read, exit 2, in one line (pull/userfile.py).

Each case runs the real `trust` executable with a deadline: a regression would block in `open()`
on the FIFO, which no writer ever opens, and the test would fail on the timeout, not hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REF = "127.0.0.1:1/app@sha256:" + "a" * 64


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def trust(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRUST_STORE": str(tmp_path / "store"), "TRUST_PASSWORD": ""}
    return subprocess.run(
        [sys.executable, "-m", "trust", *args], capture_output=True, text=True, timeout=30, env=env
    )


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--policy", "{fifo}", REF],
        ["policy", "check", "{fifo}"],
        ["verify", "--key", "{fifo}", REF],
        ["sign", "--key", "{fifo}", REF],
        [
            "verify",
            "--certificate-identity",
            "a@b.c",
            "--certificate-oidc-issuer",
            "https://x",
            "--trusted-root",
            "{fifo}",
            REF,
        ],
        ["policy", "import", "{fifo}"],
        ["webhook", "review", "{fifo}", "--policy", "{fifo}"],
    ],
    ids=["policy", "policy-check", "public-key", "private-key", "trusted-root", "import", "review"],
)
def test_a_fifo_is_refused_at_once(tmp_path: Path, fifo: Path, args: list[str]) -> None:
    result = trust(tmp_path, *(arg.replace("{fifo}", str(fifo)) for arg in args))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "regular file" in lines[0] or "FIFO" in lines[0], lines[0]


def test_a_keypath_inside_an_imported_policy_naming_a_fifo_is_refused(tmp_path: Path, fifo: Path) -> None:
    # The importer converts what it can and rejects a scope it cannot convert, with a warning
    # (exit 0): the point is that it says why at once instead of blocking in open().
    policy = tmp_path / "policy.json"
    requirement = {
        "type": "sigstoreSigned",
        "keyPath": str(fifo),
        "signedIdentity": {"type": "matchRepository"},
    }
    docker = {"registry.example": [requirement]}
    document = {"default": [{"type": "reject"}], "transports": {"docker": docker}}
    policy.write_text(json.dumps(document))
    result = trust(tmp_path, "policy", "import", str(policy))
    assert result.returncode == 0, result.stderr
    assert "not a regular file (a FIFO)" in result.stderr and "Traceback" not in result.stderr
    assert "the scope is rejected" in result.stderr
    assert 'scope: "registry.example"\n    reject: true' in result.stdout


def test_a_directory_is_refused_as_a_key(tmp_path: Path) -> None:
    result = trust(tmp_path, "verify", "--key", str(tmp_path), REF)
    assert result.returncode == 2 and "Traceback" not in result.stderr


POLICY = "version: 1\\ndefault:\\n  reject: true\\n"


def test_process_substitution_still_works(tmp_path: Path) -> None:
    # `--policy <(…)` hands an anonymous pipe as /dev/fd/N: that one is read, a named FIFO is not.
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m trust policy check <(printf '{POLICY}')"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TRUST_STORE": str(tmp_path / "store")},
    )
    assert result.returncode == 0, result.stderr
