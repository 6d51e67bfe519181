"""The `trust` executable (`trust.console.console`): exit codes and output survive its fast exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def trust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trust", *args], capture_output=True, text=True, timeout=60)


def test_errors_keep_their_exit_code_and_one_line(tmp_path: Path) -> None:
    done = trust("pull", "--store", str(tmp_path), "127.0.0.1:5000/Bad/Name:v1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "bad repository name" in done.stderr


def test_buffered_output_is_flushed_before_exiting(tmp_path: Path) -> None:
    # stdout is a pipe, so block-buffered: without the flush before os._exit it would arrive empty.
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefault:\n  reject: true\n")
    done = trust(
        "policy",
        "explain",
        "--policy",
        str(policy),
        "-o",
        "json",
        "registry7.example.com/app@sha256:" + "a" * 64,
    )
    assert done.returncode == 3
    assert json.loads(done.stdout)["decision"] == "deny"


def test_version() -> None:
    done = trust("--version")
    assert done.returncode == 0 and done.stdout.startswith("trust ") and "Python" in done.stdout


def test_the_executable_imports_only_the_standard_library_before_it_knows_the_command() -> None:
    # What `trust.console` imports is paid by every command, with an agent or without.
    code = (
        "import sys; before = set(sys.modules); import trust.console; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = set(done.stdout.split())
    assert {"trust", "trust.console"} <= loaded
    assert not {"typing", "pathlib", "typer", "trust.cli", "trust.agent", "pull", "policy"} & loaded
