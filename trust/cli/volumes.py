"""`trust volume create | ls | inspect | rm | prune`: named volumes (run/volumes.py), as docker's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pull.errors import UsageError
from trust.cli.options import StoreOption
from trust.cli.output import OutputFormat, emit_json, emit_line, emit_table

if TYPE_CHECKING:
    from run.containers import ContainerStore

volume_app = typer.Typer(
    help="Named volumes: directories in the store that outlive containers.", no_args_is_help=True
)

NamesArg = Annotated[list[str], typer.Argument(help="Volume names.", show_default=False)]


def register(app: typer.Typer) -> None:
    app.add_typer(volume_app, name="volume")


def _containers(store: StoreOption) -> ContainerStore:
    from run.containers import ContainerStore
    from trust.cli.common import open_store

    return ContainerStore(open_store(store))


@volume_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The volume's name.")],
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).", show_default=False)
    ] = None,
    store: StoreOption = None,
) -> None:
    """Make a volume (an existing one of that name is kept as it is); print its name."""
    labels = []
    for item in label or ():
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --label {item!r}: expected KEY=VALUE")
        labels.append((key, value))
    emit_line(_containers(store).volumes.create(name, labels).name)


@volume_app.command("ls")
def ls(
    store: StoreOption = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")] = OutputFormat.text,
) -> None:
    """List volumes."""
    volumes = list(_containers(store).volumes)
    if output is OutputFormat.json:
        emit_json([v.to_json() for v in volumes])
        return
    emit_table(["DRIVER", "VOLUME NAME"], [["local", v.name] for v in volumes])


@volume_app.command("inspect")
def inspect(names: NamesArg, store: StoreOption = None) -> None:
    """Print volumes' records as JSON (a list, as docker's)."""
    volumes = _containers(store).volumes
    emit_json([volumes.get(name).to_json() for name in names])


@volume_app.command("rm")
def rm(names: NamesArg, store: StoreOption = None) -> None:
    """Remove volumes and their data; refused (exit 2) for a volume any container uses."""
    containers = _containers(store)
    for name in names:
        containers.remove_volume(name)
        emit_line(name)


@volume_app.command("prune")
def prune(store: StoreOption = None) -> None:
    """Remove every volume that no container uses; print their names."""
    containers = _containers(store)
    for volume in list(containers.volumes):
        try:
            containers.remove_volume(volume.name)
        except UsageError:
            continue  # in use
        emit_line(volume.name)
