"""`trust copy SRC DST`: copy an image with its signatures and attestations (see `trust.store_ops.copy`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from trust.cli.options import InsecureOption
from trust.cli.output import OutputFormat, emit_json, emit_line, human_size, note


def register(app: typer.Typer) -> None:
    app.command("copy")(copy)


def copy(
    source: Annotated[
        str,
        typer.Argument(help="Image to copy: host/repo:tag, host/repo@sha256:…, or oci:DIR[:tag][@digest]."),
    ],
    destination: Annotated[
        str,
        typer.Argument(help="Where to: host/repo[:tag] or oci:DIR:tag (the layout is created if missing)."),
    ],
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Copy only this os/arch[/variant] of an index (default: all)."),
    ] = None,
    no_attached: Annotated[
        bool,
        typer.Option(
            "--no-signatures", help="Copy the image only, without signatures, attestations, referrers."
        ),
    ] = False,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")] = OutputFormat.text,
    insecure_registry: InsecureOption = None,
) -> None:
    """Copy an image, its .sig/.att/.sbom tags and its referrers between registries and OCI layouts.

    Every manifest and blob is verified against its digest on the way; prints the destination digest.
    """
    from pull.clients import RegistryClients
    from pull.manifest import Platform
    from pull.reference import Reference
    from trust.cli.common import qualified
    from trust.store_ops.copy import copy_image

    src = Reference.parse(qualified(source))
    dst = Reference.parse(destination)
    wanted = Platform.parse(platform) if platform else None
    with RegistryClients.insecure(insecure_registry) as clients:
        if output is OutputFormat.text and sys.stderr.isatty():
            from trust.cli.progress import RichPullProgress

            with RichPullProgress("copying") as bars:
                result = copy_image(
                    clients, src, dst, platform=wanted, attached=not no_attached, progress=bars
                )
        else:
            result = copy_image(clients, src, dst, platform=wanted, attached=not no_attached)
    if output is OutputFormat.json:
        emit_json(result.to_json())
        return
    extras = len(result.tags) + len(result.referrers)
    note(
        f"copied {src} -> {dst}: {len(result.manifests)} manifests, {result.blobs_copied} blobs "
        f"({human_size(result.bytes_copied)}), {result.blobs_skipped} already there, "
        f"{extras} signatures/attestations"
    )
    emit_line(f"{dst.name}@{result.digest}")
