"""Options that several commands declare alike (typer's `Annotated` aliases), and their choices.

Only the typer commands import this. `trust.cli.common` holds what commands share at run time and
stays free of typer, because `trust run` and `trust create` parse their flags without it
(`trust.cli.fastparse`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trust.cli.output import OutputFormat

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar="TRUST_STORE",
        help="Content store directory (default /var/lib/trust as root, else the XDG data dir).",
        show_default=False,
    ),
]


class GateOutput(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


class SignatureFormat(StrEnum):
    cosign = "cosign"
    notation = "notation"


OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="text or json.")]
InsecureOption = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-registry",
        help="Allow plain HTTP to this host[:port] (loopback registries are always allowed).",
    ),
]

# Keyless (Sigstore) flags, named as cosign names them; shared by `verify` and `verify-blob`.
CertificateIdentityOption = Annotated[
    str | None,
    typer.Option("--certificate-identity", help="Keyless: the signer's identity (e-mail or URI), exactly."),
]
CertificateIdentityRegexpOption = Annotated[
    str | None,
    typer.Option("--certificate-identity-regexp", help="Keyless: a regexp the whole identity must match."),
]
CertificateIssuerOption = Annotated[
    str | None,
    typer.Option("--certificate-oidc-issuer", help="Keyless: the OIDC issuer, exactly."),
]
CertificateIssuerRegexpOption = Annotated[
    str | None,
    typer.Option("--certificate-oidc-issuer-regexp", help="Keyless: a regexp the whole issuer must match."),
]
GithubRepositoryOption = Annotated[
    str | None,
    typer.Option("--certificate-github-workflow-repository", help="Keyless: required GitHub owner/repo."),
]
GithubRefOption = Annotated[
    str | None, typer.Option("--certificate-github-workflow-ref", help="Keyless: required GitHub ref.")
]
GithubNameOption = Annotated[
    str | None, typer.Option("--certificate-github-workflow-name", help="Keyless: required workflow name.")
]
GithubTriggerOption = Annotated[
    str | None,
    typer.Option("--certificate-github-workflow-trigger", help="Keyless: required trigger (e.g. push)."),
]
GithubShaOption = Annotated[
    str | None, typer.Option("--certificate-github-workflow-sha", help="Keyless: required commit SHA.")
]
TrustConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--trust-config",
        help="Sigstore ClientTrustConfig JSON (trusted root + signing config) of a private instance.",
    ),
]
FulcioUrlOption = Annotated[
    str | None, typer.Option("--fulcio-url", help="Keyless: this Fulcio instead of the signing config's.")
]
RekorUrlOption = Annotated[
    str | None,
    typer.Option("--rekor-url", help="Log to this Rekor (v1 API) instead of the signing config's."),
]
OidcIssuerOption = Annotated[
    str | None, typer.Option("--oidc-issuer", help="Keyless: the OIDC issuer of the interactive flow.")
]
TimestampServerOption = Annotated[
    str | None,
    typer.Option(
        "--timestamp-server-url", help="Sigstore: an RFC 3161 timestamp authority to stamp the signature."
    ),
]
TlogUploadOption = Annotated[
    str,
    typer.Option(
        "--tlog-upload",
        help="Log the signature in Rekor (default true; --tlog-upload=false opts out).",
        metavar="BOOL",
    ),
]
TrustedRootOption = Annotated[
    Path | None,
    typer.Option(
        "--trusted-root",
        help="Keyless: Sigstore trusted_root.json (default: the public-good root shipped with sigstore).",
    ),
]


CertDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cert-dir",
        envvar="TRUST_CERT_DIR",
        help="Directory with *.crt CAs and a client.cert/client.key pair for the registry (as skopeo's), "
        "instead of certs.d/HOST[:PORT]/.",
        show_default=False,
    ),
]
