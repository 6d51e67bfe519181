"""`trust webhook serve | review`: the policy as a Kubernetes admission webhook (docs/kubernetes.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pull.errors import UsageError
from pull.userfile import open_regular_file
from trust.cli.options import InsecureOption
from trust.cli.output import emit_json, note

webhook_app = typer.Typer(
    help="Serve the policy as a Kubernetes admission webhook, or answer one AdmissionReview offline.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

PolicyOption = Annotated[
    Path, typer.Option("--policy", help="Policy file (the same one `trust verify` uses).")
]
ExemptNamespaceOption = Annotated[
    list[str] | None,
    typer.Option("--exempt-namespace", help="Admit Pods of this namespace unchecked (repeatable)."),
]
ExemptImageOption = Annotated[
    list[str] | None,
    typer.Option("--exempt-image", help="Admit images under this scope unchecked (repeatable)."),
]
DeadlineOption = Annotated[
    float,
    typer.Option("--deadline", help="Seconds per review; keep it below the webhook's timeoutSeconds."),
]
PlatformOption = Annotated[
    str | None, typer.Option("--platform", help="os/arch whose manifest an index must have signed.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(webhook_app, name="webhook")


@webhook_app.command("serve")
def serve(
    policy: PolicyOption,
    tls_cert: Annotated[
        Path, typer.Option("--tls-cert", help="Server certificate (PEM), re-read on change.")
    ],
    tls_key: Annotated[Path, typer.Option("--tls-key", help="Its private key (PEM).")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = "0.0.0.0:8443",
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (0: one per CPU).")] = 0,
    deadline: DeadlineOption = 8.0,
    decision_ttl: Annotated[
        float, typer.Option("--decision-ttl", help="Seconds an allow is cached.")
    ] = 300.0,
    denial_ttl: Annotated[float, typer.Option("--denial-ttl", help="Seconds a denial is cached.")] = 10.0,
    tag_ttl: Annotated[float, typer.Option("--tag-ttl", help="Seconds a tag's digest is cached.")] = 30.0,
    platform: PlatformOption = None,
    exempt_namespace: ExemptNamespaceOption = None,
    exempt_image: ExemptImageOption = None,
    insecure_registry: InsecureOption = None,
) -> None:
    """Serve /validate and /mutate (AdmissionReview v1) over HTTPS, with /healthz, /readyz, /metrics."""
    from trust.webhook.server import ServerSettings
    from trust.webhook.server import serve as run_server

    host, port = _listen(listen)
    if deadline <= 0 or workers < 0:
        raise UsageError("--deadline must be positive and --workers at least 0")
    run_server(
        ServerSettings(
            policy=str(policy.absolute()),
            tls_cert=str(tls_cert.absolute()),
            tls_key=str(tls_key.absolute()),
            host=host,
            port=port,
            workers=workers,
            deadline=deadline,
            decision_ttl=decision_ttl,
            denial_ttl=denial_ttl,
            tag_ttl=tag_ttl,
            platform=platform,
            exempt_namespaces=list(exempt_namespace or ()),
            exempt_images=list(exempt_image or ()),
            insecure_registries=list(insecure_registry or ()),
        )
    )


@webhook_app.command("review")
def review(
    file: Annotated[Path, typer.Argument(help="An AdmissionReview JSON file, or - for standard input.")],
    policy: PolicyOption,
    mutate: Annotated[
        bool, typer.Option("--mutate", help="Answer as /mutate: pin tags with a patch.")
    ] = False,
    deadline: DeadlineOption = 8.0,
    platform: PlatformOption = None,
    exempt_namespace: ExemptNamespaceOption = None,
    exempt_image: ExemptImageOption = None,
    insecure_registry: InsecureOption = None,
) -> None:
    """Answer one AdmissionReview exactly as the webhook would, without a cluster; print the response.

    Exit 0 when the object is allowed, 3 when it is denied, 2 when the review is malformed.
    """
    from trust.webhook.handler import handle
    from trust.webhook.server import ServerSettings, decider_from

    body = sys.stdin.buffer.read(4 * 1024 * 1024) if str(file) == "-" else _read_review(file)
    decider = decider_from(
        ServerSettings(
            policy=str(policy),
            tls_cert="",
            tls_key="",
            deadline=deadline,
            platform=platform,
            exempt_namespaces=list(exempt_namespace or ()),
            exempt_images=list(exempt_image or ()),
            insecure_registries=list(insecure_registry or ()),
        )
    )
    try:
        handled = handle(body, decider, mutate=mutate)
    finally:
        decider.close()
    emit_json(handled.response)
    response = handled.response["response"]
    if not response["allowed"]:
        note(f"trust: denied: {response['status']['message']}")
        raise typer.Exit(3)
    for warning in response.get("warnings", []):
        note(f"trust: warning: {warning}")


def _read_review(file: Path) -> bytes:
    from trust.webhook.review import MAX_REVIEW_BYTES

    try:
        with open_regular_file(file) as handle:  # a FIFO is refused, never blocks
            return handle.read(MAX_REVIEW_BYTES + 1)
    except OSError as err:
        raise UsageError(f"cannot read {file}: {err.strerror}") from None


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} must be HOST:PORT, e.g. 0.0.0.0:8443")
    return host.strip("[]") or "0.0.0.0", int(port)
