"""`trust.cli.fastparse` against typer: the same flags from the same command line, or None.

`trust run` and `trust create` parse their flags without typer when they can. Every command line
below is parsed both ways: typer's `ContainerFlags` (caught where `trust.cli.containers` hands them
to `trust.cli.launch`) must equal fastparse's, or fastparse must decline it (None) and typer then
says what is wrong. The flag table itself is compared with the click options typer builds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from trust.cli import fastparse, launch
from trust.cli.app import _narrowed, app, main
from trust.cli.launch import ContainerFlags

IMAGE = "registry.example/app@sha256:" + "a" * 64


def click_command(name: str) -> Any:
    group = typer.main.get_command(_narrowed(app, [name]))
    return group.commands[name]  # type: ignore[attr-defined]


def typer_flags(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, ContainerFlags | None]:
    """What typer passes to `launch` for `trust ARGV` (None if it refused), and the exit code."""
    seen: list[ContainerFlags] = []

    def record(flags: ContainerFlags) -> int:
        seen.append(flags)
        return 0

    monkeypatch.setattr(launch, "run", record)
    monkeypatch.setattr(launch, "create", record)
    code = main(list(argv))
    return code, (seen[0] if seen else None)


@pytest.mark.parametrize("name", ["run", "create"])
def test_the_table_has_every_spelling_of_every_option_typer_declares(name: str) -> None:
    declared: set[str] = set()
    for param in click_command(name).params:
        if not isinstance(param, typer.core.TyperOption):
            continue
        for spelling in (*param.opts, *param.secondary_opts):
            declared.add(spelling)
            assert spelling in fastparse.FLAGS, (
                f"{spelling} of `trust {name}` is missing from fastparse.FLAGS"
            )
            field, kind = fastparse.FLAGS[spelling]
            assert field == param.name, spelling
            assert (kind == fastparse.FLAG) == bool(param.is_flag), spelling
            assert (kind in (fastparse.TEXTS, fastparse.PATHS)) == bool(param.multiple), spelling
            type_name = type(param.type).__name__
            expected = {
                fastparse.FLAG: {"BoolParamType"},
                fastparse.TEXT: {"StringParamType"},
                fastparse.TEXTS: {"StringParamType"},
                fastparse.NUMBER: {"IntParamType"},
                fastparse.PATH: {"TyperPath", "Path"},
                fastparse.PATHS: {"TyperPath", "Path"},
                fastparse.RUNTIME: {"TyperChoice", "Choice"},
            }[kind]
            assert type_name in expected, (spelling, type_name)
            if kind in (fastparse.PATH, fastparse.PATHS):  # no check click would make on the file
                assert not (param.type.exists or param.type.resolve_path), spelling
            if kind == fastparse.RUNTIME:
                assert list(param.type.choices) == [choice.value for choice in launch.RuntimeChoice]
            assert fastparse.ENVIRONMENT.get(field) == param.envvar, spelling
    expected_table = {
        spelling
        for spelling, (field, _) in fastparse.FLAGS.items()
        if name == "run" or field not in fastparse.ONLY_RUN
    }
    assert declared == expected_table


AGREED = [
    ["run", IMAGE],
    ["create", IMAGE],
    ["run", "--rm", "--network", "none", IMAGE, "/bin/true"],
    ["run", "-dit", IMAGE],
    ["run", "-e", "A=1", "-eB=2", "--env=C=3", "-e=D", "--env", "E", IMAGE, "sh", "-c", "echo $A"],
    ["run", "-p", "8080:80", "-p80", "--publish=1:2/udp", "-P", "--publish-all", IMAGE],
    ["run", "--name", "x", "--name", "y", IMAGE],
    ["run", "--pids-limit", "10", "--pids-limit=7", IMAGE],
    ["run", "--runtime", "crun", IMAGE],
    ["run", "--runtime=runc", IMAGE],
    ["run", "--store", "/s", "--policy", "p.yaml", "--env-file", "a", "--env-file=b", IMAGE],
    ["run", "--", IMAGE, "--rm"],
    ["run", IMAGE, "--", "x"],
    ["run", "--rm", "--", "-odd-image"],
    [
        "run",
        "-v",
        "/a:/b:ro",
        "--volume=v:/c",
        "--tmpfs",
        "/t",
        "--mount",
        "type=tmpfs,target=/x",
        "--read-only",
        IMAGE,
    ],
    [
        "run",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "seccomp=unconfined",
        "--privileged",
        IMAGE,
    ],
    ["run", "--userns", "auto", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", IMAGE],
    [
        "run",
        "--init",
        "--restart",
        "on-failure:2",
        "--stop-signal",
        "KILL",
        "--label",
        "a=b",
        "-l",
        "c=d",
        IMAGE,
    ],
    ["run", "--entrypoint", "", "-w", "/tmp", "-u", "1:1", "--hostname", "h", IMAGE, "a", "b"],
    [
        "run",
        "--dns",
        "1.1.1.1",
        "--dns-search",
        ".",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "a:1.2.3.4",
        "--net",
        "bridge",
        IMAGE,
    ],
    [
        "run",
        "-m",
        "64m",
        "--memory=1g",
        "--cpus",
        "0.5",
        "--insecure-registry",
        "h:5000",
        "--detach-keys",
        "",
        IMAGE,
    ],
    ["run", "-de", "K=V", IMAGE],
    ["run", "-ed", IMAGE],
    ["run", "-tiP", "-p", "9000", IMAGE, "-d"],
    ["run", "--name", "--rm", IMAGE],
    ["run", "-w", "-", IMAGE],
    ["run", "-", "x"],
    ["run", IMAGE, "--name"],  # after the image: the command's
    ["run", "", "x"],
    ["create", "-it", "--name", "c", "--rm", IMAGE, "sh"],
    ["create", "--interactive", "--tty", "-p", "1:1", "--restart", "always", IMAGE],
]


@pytest.mark.parametrize("argv", AGREED, ids=[" ".join(argv)[:60] for argv in AGREED])
def test_fastparse_builds_what_typer_builds(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUST_STORE", raising=False)
    code, by_typer = typer_flags(argv, monkeypatch)
    assert code == 0 and by_typer is not None
    assert fastparse.parse(argv, os.environ) == (argv[0], by_typer)


@pytest.mark.parametrize(
    ("variable", "argv"),
    [("/from-env", ["run", IMAGE]), ("", ["run", IMAGE]), ("/from-env", ["run", "--store", "/flag", IMAGE])],
)
def test_the_store_comes_from_trust_store_as_typer_reads_it(
    variable: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_STORE", variable)
    code, by_typer = typer_flags(argv, monkeypatch)
    assert code == 0 and by_typer is not None
    parsed = fastparse.parse(argv, os.environ)
    assert parsed == ("run", by_typer)
    assert parsed[1].store == (Path("/flag") if "--store" in argv else Path(variable) if variable else None)


LEFT_TO_TYPER = [
    (["run", "--help"], 0),
    (["run"], 2),
    (["run", "--rm"], 2),
    (["run", "--rm=yes", IMAGE], 2),
    (["run", "--pids-limit", "many", IMAGE], 2),
    (["run", "--runtime", "kata", IMAGE], 2),
    (["run", "--unknown", IMAGE], 2),
    (["run", "--nam", "x", IMAGE], 2),
    (["run", "-Z", IMAGE], 2),
    (["run", "-dZ", IMAGE], 2),
    (["create", "-d", IMAGE], 2),
    (["create", "--detach-keys", "x", IMAGE], 2),
    (["run", "--name"], 2),
]


@pytest.mark.parametrize(("argv", "typer_code"), LEFT_TO_TYPER, ids=[" ".join(a) for a, _ in LEFT_TO_TYPER])
def test_what_fastparse_declines_typer_answers(
    argv: list[str], typer_code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TRUST_STORE", raising=False)
    assert fastparse.parse(argv, os.environ) is None
    code, by_typer = typer_flags(argv, monkeypatch)
    assert code == typer_code and by_typer is None
    if code == 2:
        assert "Error: " in capsys.readouterr().err  # typer's own explanation


def test_a_global_option_before_run_is_left_to_typer() -> None:
    assert fastparse.parse(["--registries-conf", "x", "run", IMAGE], os.environ) is None


def test_trust_run_starts_without_importing_typer(tmp_path: Path) -> None:
    # A tag is refused before any network call: the whole command, through the console script's
    # code path, ends with the same line and exit code as typer's path, and typer never loaded.
    env = {**os.environ, "TRUST_NO_AGENT": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    probe = (
        "import sys\n"
        "from trust.cli.console import run_here\n"
        "code = run_here(sys.argv[1:])\n"
        "print('typer' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    argv = ["run", "--store", str(tmp_path / "store"), "--network", "none", "registry.example/app:v1"]
    fast = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True)
    assert fast.returncode == 3, fast.stderr
    refusal, loaded = fast.stderr.splitlines()
    assert refusal.startswith("trust: error: tag-only reference registry.example/app:v1 refused")
    assert loaded == "False"
    slow = subprocess.run(
        [sys.executable, "-c", probe, *argv[:1], "--rm=no", *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert slow.returncode == 2 and "does not take a value" in slow.stderr  # typer's error, typer loaded
    assert slow.stderr.splitlines()[-1] == "True"
