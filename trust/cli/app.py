"""The `trust` command line: assembles the typer app from the command modules and runs it.

Each command group lives in its own module (`images`, `signatures`, `containers`, `policy`,
`store`, `copy`, `trusted_root`) with a `register(app)`; they share `trust.cli.common`. Every
deliberate error is a `TrustError`; `main()` maps its class to an exit code through one table
(`common.EXIT_CODES`) and prints one line. Heavy modules (httpx, cryptography, sigstore) are
imported inside the commands that need them, so `trust --help` and `trust run` start fast.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from trust.cli.common import exit_status
from trust.cli.output import emit_line, note

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="trust",
    help="Verified pulls, signatures, policy admission and a namespaced runtime for OCI images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's markdown renderer costs 0.1 s per start
)


def _print_version(value: bool) -> None:
    if value:
        import platform
        from importlib.metadata import version

        emit_line(f"trust {version('trust')} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
    registries_conf: Annotated[
        Path | None,
        typer.Option(
            "--registries-conf",
            help="registries.conf to read alone (default: CONTAINERS_REGISTRIES_CONF, else the "
            "system and user files with their drop-ins; see docs/registries.md).",
            show_default=False,
        ),
    ] = None,
    cert_dir: Annotated[
        Path | None,
        typer.Option(
            "--cert-dir",
            help="Directory with *.crt CAs and client.cert/client.key for every registry (as "
            "skopeo's), instead of certs.d/HOST[:PORT]/.",
            show_default=False,
        ),
    ] = None,
    request_deadline: Annotated[
        str | None,
        typer.Option(
            "--request-deadline",
            metavar="DURATION",
            help="Longest any one request to a registry may take, e.g. 600, 90s, 15m, 2h (default 1h; "
            "env TRUST_REQUEST_DEADLINE). Beyond it the command stops, exit 5.",
            show_default=False,
        ),
    ] = None,
    min_rate: Annotated[
        str | None,
        typer.Option(
            "--min-rate",
            metavar="BYTES/S",
            help="Slowest transfer accepted, averaged over 30 s, e.g. 10k, 2MB (default 10k; 0: none; "
            "env TRUST_MIN_RATE). A slower registry is abandoned, exit 5.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Verified pulls, signatures, policy admission and a namespaced runtime for OCI images."""
    # Every command (and the agent and webhook it may hand work to) reads these through the
    # environment, where podman's and skopeo's users already set them.
    if registries_conf is not None:
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf.absolute())
    if cert_dir is not None:
        os.environ["TRUST_CERT_DIR"] = str(cert_dir.absolute())
    if request_deadline is not None or min_rate is not None:
        from pull.config import DEADLINE_ENV, MIN_RATE_ENV, parse_deadline, parse_rate

        if request_deadline is not None:
            os.environ[DEADLINE_ENV] = str(parse_deadline(request_deadline))  # checked now: exit 2
        if min_rate is not None:
            os.environ[MIN_RATE_ENV] = str(parse_rate(min_rate))


def agent(
    socket: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            envvar="TRUST_AGENT_SOCKET",
            help="Unix socket to listen on (default /run/trust/agent.sock).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve `trust run` and `trust create` from a warm process: each runs in a fork of it.

    The `trust` executable hands those commands to the agent whenever its socket exists, and skips
    Python's start-up and imports (~70 ms). Only processes of the agent's own user, confined no
    more than the agent, may use it. See docs/runtime.md.
    """
    from trust.cli.agent import serve
    from trust.cli.console import socket_path

    serve(socket or Path(socket_path()))


def _register_subcommands() -> None:
    from trust.cli import attestations as attestations_cli
    from trust.cli import copy as copy_cli
    from trust.cli import images as images_cli
    from trust.cli import policy as policy_cli
    from trust.cli import signatures as signatures_cli
    from trust.cli import store as store_cli
    from trust.cli import trusted_root as trusted_root_cli
    from trust.cli import webhook as webhook_cli

    images_cli.register(app)
    signatures_cli.register(app)
    attestations_cli.register(app)
    app.command()(agent)
    policy_cli.register(app)
    store_cli.register(app)
    copy_cli.register(app)
    trusted_root_cli.register(app)
    webhook_cli.register(app)
    try:
        container_cli = importlib.import_module("trust.cli.containers")
    except ImportError:  # the runtime commands are optional while they are being built
        return
    container_cli.register(app)
    from trust.cli import volumes as volumes_cli

    volumes_cli.register(app)


_register_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    saved = {name: os.environ.get(name) for name in _GLOBAL_ENV}

    def invoke() -> int | None:
        prepared = _prepared.get(args[0]) if args else None
        command = prepared if prepared is not None else _narrowed(app, args)
        # prog_name: click would name the program after sys.argv[0], `trust-python` when the
        # `trust` executable (trust/cli/console.c) runs the command in Python
        result = command(args=args, prog_name="trust", standalone_mode=False)
        return result if isinstance(result, int) else None

    try:
        return exit_status(invoke)
    except typer.Abort:
        note("trust: aborted")
        return 1
    except typer.TyperException as err:  # bad flags and arguments: exit_code 2
        cast(Any, err).show()
        return int(getattr(err, "exit_code", 2))
    except typer.Exit as err:
        return int(err.exit_code)
    finally:
        for name, value in saved.items():  # an in-process caller (tests) keeps its environment
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_prepared: dict[str, Any] = {}
"""Click commands built ahead of time by `prepare` (the agent's), by the command name they start with."""


def prepare(name: str) -> None:
    """Build the click command for `trust NAME …` now, for `main` to reuse: typer spends ~9 ms
    reading the signature of `run` on every call. The agent prepares `run` and `create` once, so
    that its forks skip it; the command behaves exactly as one built on the spot (same function,
    same app callback)."""
    if sys.excepthook != typer.main.except_hook:  # what `Typer.__call__` sets up
        sys.excepthook = typer.main.except_hook
    _prepared[name] = typer.main.get_command(_narrowed(app, [name]))


_GLOBAL_ENV = ("CONTAINERS_REGISTRIES_CONF", "TRUST_CERT_DIR", "TRUST_REQUEST_DEADLINE", "TRUST_MIN_RATE")
"""Set by the global `--registries-conf`, `--cert-dir`, `--request-deadline` and `--min-rate` for
the command's duration."""


def _narrowed(full: typer.Typer, args: list[str]) -> typer.Typer:
    """`full` with only the command that `args` invokes, when it names one.

    typer turns every registered function into a click command (reading its signature and
    annotations) before it parses anything: ~40 ms for trust's 30 commands, on every run. One
    command's help, parsing and errors are the same without the others; `trust --help` and a
    misspelt command still get the whole app.
    """
    if not args or args[0] in ("--help", "-h"):
        return _listing(full)
    if args[0].startswith("-"):
        return full
    name = args[0]
    commands = [
        info for info in full.registered_commands if (info.name or _command_name(info.callback)) == name
    ]
    groups = [info for info in full.registered_groups if info.name == name]
    if not commands and not groups:
        return full
    narrowed = copy.copy(full)
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    return narrowed


def _listing(full: typer.Typer) -> typer.Typer:
    """`full` for `trust --help`: each command reduced to its name and its help text.

    The listing shows nothing of a command's parameters, and turning every signature into click
    options is most of what `trust --help` costs (~40 ms for some 50 commands).
    """
    listing = copy.copy(full)
    listing.registered_commands = []
    for info in full.registered_commands:
        stub = copy.copy(info)
        stub.name = info.name or _command_name(info.callback)
        stub.help = info.help or (info.callback.__doc__ if info.callback is not None else None)
        stub.callback = _nothing
        listing.registered_commands.append(stub)
    return listing


def _nothing() -> None:
    """Stands in for a command whose parameters a listing does not show."""


def _command_name(callback: Callable[..., Any] | None) -> str | None:
    return callback.__name__.lower().replace("_", "-") if callback is not None else None
