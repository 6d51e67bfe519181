"""The `trust` executable: how setup.py builds it (trust/cli/console.c, or a Python stand-in), and
`trust.cli.console.console` behind it: exit codes and output survive its fast exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from setuptools.dist import Distribution

from trust import __version__

ROOT = Path(__file__).resolve().parents[1]


def setup_module_of_the_checkout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trust_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("compiler", ["cc", "/bin/false"])
def test_setup_builds_the_c_executable_or_else_the_python_stand_in(
    compiler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # setup.py's paths are the checkout's, as pip runs it
    monkeypatch.setenv("CC", compiler)
    build = setup_module_of_the_checkout().BuildExecutable(Distribution())
    build.build_dir = str(tmp_path)
    build.run()
    built = tmp_path / "trust"
    assert built.stat().st_mode & 0o777 == 0o755
    if compiler == "cc":
        assert built.read_bytes()[:4] == b"\x7fELF"
        assert f"\0{__version__}\0".encode() in built.read_bytes()  # what it tells the agent
    else:  # pip writes the interpreter's path into `#!python`
        assert built.read_text() == "#!python\nfrom trust.cli.console import console\n\nconsole()\n"


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
    # What `trust.cli.console` imports is paid by every command, with an agent or without.
    code = (
        "import sys; before = set(sys.modules); import trust.cli.console; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = set(done.stdout.split())
    assert {"trust", "trust.cli.console"} <= loaded
    assert not {"typing", "pathlib", "typer", "trust.cli.app", "trust.cli.agent", "pull", "policy"} & loaded
    # Nor the standard modules that import enum, re, selectors or array: their C halves do the job.
    assert not {"json", "socket", "signal", "struct", "enum", "re"} & loaded


def _command_names() -> list[str]:
    from trust.cli.app import _command_name, app

    commands = {info.name or _command_name(info.callback) for info in app.registered_commands}
    groups = {info.name for info in app.registered_groups}
    return sorted(name for name in commands | groups if name)


@pytest.mark.parametrize("name", _command_names())
def test_a_command_built_alone_behaves_as_in_the_whole_app(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `main` builds only the command it runs (`trust.cli.app._narrowed`); its help, and its answer to
    # a flag it does not have, must be what the whole app gives.
    from trust.cli import app as cli

    answers = []
    for narrowing in (True, False):
        if not narrowing:
            monkeypatch.setattr(cli, "_narrowed", lambda full, args: full)
        for args in ([name, "--help"], [name, "--no-such-flag"]):
            code = cli.main(args)
            captured = capsys.readouterr()
            answers.append((narrowing, args, code, captured.out, captured.err))
    alone, whole = answers[:2], answers[2:]
    assert [a[1:] for a in alone] == [w[1:] for w in whole]
    assert alone[0][2] == 0 and alone[0][3].startswith("Usage: ")
    assert alone[1][2] == 2 and "No such option: --no-such-flag" in alone[1][4]


def test_the_quick_top_level_help_lists_exactly_what_the_full_app_would() -> None:
    """`trust --help` builds each command as a stub (name and help only): the same text as the app."""
    import typer

    from trust.cli.app import _listing, app

    def help_text(built: typer.Typer) -> str:
        command = typer.main.get_command(built)
        with command.make_context("trust", [], resilient_parsing=True) as ctx:
            return command.get_help(ctx)

    full, quick = help_text(app), help_text(_listing(app))
    assert quick == full
    assert "verify-attestation" in quick and "webhook" in quick
