"""`trust trusted-root refresh`: the one way keyless verification ever touches the network."""

from __future__ import annotations

import typer

from trust.cli.output import emit_line, note

trusted_root_app = typer.Typer(
    help="The Sigstore trusted root that keyless verification relies on.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(trusted_root_app, name="trusted-root")


@trusted_root_app.command()
def refresh() -> None:
    """Fetch the Sigstore public-good trusted root through TUF (verified) for later offline use.

    Verification never does this by itself: until the next refresh it uses this copy (or, before
    any refresh, the one shipped with sigstore-python). Exit 5 if the TUF repository cannot be
    reached or does not verify. Private instances pass --trusted-root FILE instead.
    """
    from trust.sigstore.trusted_root import load_trusted_root, refresh_public_good

    path = refresh_public_good()
    loaded = load_trusted_root()
    note(
        f"refreshed: {len(loaded.fulcio_certificates)} Fulcio certificates, "
        f"{len(loaded.rekor_logs)} Rekor logs"
    )
    emit_line(str(path))


@trusted_root_app.command()
def show() -> None:
    """Print which trusted root keyless verification uses by default, and what it holds."""
    from trust.sigstore.trusted_root import load_trusted_root

    loaded = load_trusted_root()
    emit_line(loaded.source)
    emit_line(f"fulcio certificates: {len(loaded.fulcio_certificates)}")
    emit_line(f"rekor logs: {len(loaded.rekor_logs)}")
