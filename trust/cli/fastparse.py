"""`trust run` and `trust create` flags parsed without typer, for the common case.

typer and the click inside it take ~25 ms to import and ~8 ms to build `run`'s command from its
signature: a quarter of a warm `trust run` that starts a new process, and ~5 ms of each run in an
agent's fork. A command line that only uses the flags below, spelled as click would accept them,
is parsed here into the same `ContainerFlags` typer would have built. Anything else (`--help`, an
unknown or misspelt flag, a value click would refuse, a global option before `run`) returns None,
and typer parses the whole command line again: its errors and help stay the only ones.

`FLAGS` repeats the names that `trust.cli.containers` declares for typer. tests/test_fastparse.py
compares the two flag by flag (names, kind, type, default, environment variable) and parses a
corpus of command lines both ways, so they cannot drift apart unnoticed.

How click reads a command line (`allow_interspersed_args=False`, as `run` and `create` set it):
options until the first argument that is not one, or until `--`; that argument is the image and
everything after it, verbatim, the command. `--name=x` and `--name x`; `-dit` (flags bundled),
`-e K=V` and `-eK=V` (a short option's value is the rest of its bundle, else the next argument,
whatever it looks like). A repeated option keeps the last value, a repeatable one every value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trust.cli.launch import ContainerFlags, RuntimeChoice

FLAG = "flag"  # a boolean: present or not
TEXT = "text"
NUMBER = "number"
PATH = "path"
RUNTIME = "runtime"  # one of RuntimeChoice's values
TEXTS = "texts"  # repeatable
PATHS = "paths"  # repeatable

FLAGS: dict[str, tuple[str, str]] = {
    "--detach": ("detach", FLAG),
    "-d": ("detach", FLAG),
    "--interactive": ("interactive", FLAG),
    "-i": ("interactive", FLAG),
    "--tty": ("tty", FLAG),
    "-t": ("tty", FLAG),
    "--detach-keys": ("detach_keys", TEXT),
    "--name": ("name", TEXT),
    "--env": ("env", TEXTS),
    "-e": ("env", TEXTS),
    "--env-file": ("env_file", PATHS),
    "--workdir": ("workdir", TEXT),
    "-w": ("workdir", TEXT),
    "--user": ("user", TEXT),
    "-u": ("user", TEXT),
    "--hostname": ("hostname", TEXT),
    "--entrypoint": ("entrypoint", TEXT),
    "--label": ("label", TEXTS),
    "-l": ("label", TEXTS),
    "--network": ("network", TEXT),
    "--net": ("network", TEXT),
    "--publish": ("publish", TEXTS),
    "-p": ("publish", TEXTS),
    "--publish-all": ("publish_all", FLAG),
    "-P": ("publish_all", FLAG),
    "--dns": ("dns", TEXTS),
    "--dns-search": ("dns_search", TEXTS),
    "--dns-option": ("dns_option", TEXTS),
    "--add-host": ("add_host", TEXTS),
    "--volume": ("volume", TEXTS),
    "-v": ("volume", TEXTS),
    "--tmpfs": ("tmpfs", TEXTS),
    "--mount": ("mount", TEXTS),
    "--read-only": ("read_only", FLAG),
    "--privileged": ("privileged", FLAG),
    "--cap-add": ("cap_add", TEXTS),
    "--cap-drop": ("cap_drop", TEXTS),
    "--stop-signal": ("stop_signal", TEXT),
    "--init": ("init", FLAG),
    "--restart": ("restart", TEXT),
    "--memory": ("memory", TEXT),
    "-m": ("memory", TEXT),
    "--pids-limit": ("pids_limit", NUMBER),
    "--cpus": ("cpus", TEXT),
    "--runtime": ("runtime", RUNTIME),
    "--rm": ("auto_remove", FLAG),
    "--security-opt": ("security_opt", TEXTS),
    "--userns": ("userns", TEXT),
    "--uidmap": ("uidmap", TEXTS),
    "--gidmap": ("gidmap", TEXTS),
    "--policy": ("policy", PATH),
    "--store": ("store", PATH),
    "--insecure-registry": ("insecure_registry", TEXTS),
}
"""Every spelling of every flag of `trust run`: the `ContainerFlags` field it sets and its kind."""

ONLY_RUN = frozenset({"detach", "detach_keys"})
"""Fields `trust create` has no flag for."""

ENVIRONMENT = {"store": "TRUST_STORE"}
"""Flags click reads from the environment when the command line does not give them."""


class _NotOurs(Exception):
    """A command line for typer to parse (and to explain, if it is wrong)."""


def parse(argv: list[str], environ: Mapping[str, str]) -> tuple[str, ContainerFlags] | None:
    """`("run" | "create", flags)` for `trust ARGV`, or None when typer must parse it."""
    if not argv or argv[0] not in ("run", "create"):
        return None
    command = argv[0]
    try:
        values, positional = _options(argv[1:], command)
    except _NotOurs:
        return None
    if not positional:
        return None  # no image: typer says what is missing
    for field, variable in ENVIRONMENT.items():
        if field not in values and environ.get(variable):  # click skips an empty variable
            values[field] = _convert(environ[variable], _kind_of(field))
    values["image"] = positional[0]
    values["command"] = positional[1:] or None
    return command, ContainerFlags(**values)


def _options(arguments: list[str], command: str) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    rest = list(arguments)
    while rest:
        argument = rest.pop(0)
        if argument == "--":
            break
        if argument[:1] != "-" or len(argument) == 1:
            rest.insert(0, argument)  # the image: options end here
            break
        if argument.startswith("--"):
            name, equals, attached = argument.partition("=")
            _take(values, command, name, attached if equals else None, rest)
            continue
        for position in range(1, len(argument)):  # -dit, -eK=V, -p80
            short = "-" + argument[position]
            if _flag(short, command)[1] != FLAG:  # its value: the rest of the bundle, else the next
                _take(values, command, short, argument[position + 1 :] or None, rest)
                break
            _take(values, command, short, None, rest)
    return values, rest


def _take(values: dict[str, Any], command: str, name: str, attached: str | None, rest: list[str]) -> None:
    field, kind = _flag(name, command)
    if kind == FLAG:
        if attached is not None:
            raise _NotOurs  # --rm=yes: click refuses it
        values[field] = True
        return
    if attached is None:
        if not rest:
            raise _NotOurs  # a value missing at the end
        attached = rest.pop(0)
    value = _convert(attached, kind)
    if kind in (TEXTS, PATHS):
        values.setdefault(field, []).append(value)
    else:
        values[field] = value


def _flag(name: str, command: str) -> tuple[str, str]:
    """The field and kind of flag `name` of `command`; _NotOurs if it has no such flag."""
    if name not in FLAGS:
        raise _NotOurs
    field, kind = FLAGS[name]
    if command != "run" and field in ONLY_RUN:
        raise _NotOurs
    return field, kind


def _kind_of(field: str) -> str:
    return next(kind for flag_field, kind in FLAGS.values() if flag_field == field)


def _convert(text: str, kind: str) -> Any:
    if kind in (PATH, PATHS):
        return Path(text)
    if kind == NUMBER:
        try:
            return int(text)  # what click's INT does
        except ValueError:
            raise _NotOurs from None
    if kind == RUNTIME:
        if text not in {choice.value for choice in RuntimeChoice}:
            raise _NotOurs
        return RuntimeChoice(text)
    return text
