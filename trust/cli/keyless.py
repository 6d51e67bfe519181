"""The command-line side of keyless verification: flags to a `KeylessAuthority`, and `verify-blob`.

`trust verify --certificate-identity … --certificate-oidc-issuer …` and a policy file's keyless
authority end up as the same `policy.model.KeylessAuthority`, so both are judged by one code path
(`trust.sigstore.keyless`). This module only validates flags (exit 2 before any network call) and renders.
Nothing here imports sigstore at module level: `trust --help` must stay fast.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from policy.model import KeylessAuthority
from pull.digest import Digest
from pull.errors import DeniedError, UsageError
from pull.records import dataclass
from pull.userfile import open_regular_file
from trust.cosign.simple_signing import SignatureOutcome

MAX_BLOB_BUNDLE_BYTES = 1024 * 1024
"""Same cap as a bundle fetched from a registry (`trust.sigstore.bundles.MAX_BUNDLE_BYTES`)."""


@dataclass(frozen=True)
class IdentityFlags:
    """The keyless flags of `trust verify` / `verify-blob`, as typed (all optional)."""

    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None
    github_workflow_repository: str | None = None
    github_workflow_ref: str | None = None
    github_workflow_name: str | None = None
    github_workflow_trigger: str | None = None
    github_workflow_sha: str | None = None

    @property
    def given(self) -> bool:
        """Whether any keyless flag was given (selects keyless verification)."""
        return any(value is not None for value in vars(self).values())


def keyless_authority(flags: IdentityFlags, trusted_root: Path | None) -> KeylessAuthority:
    """The authority the flags describe. Raises `UsageError` for missing, conflicting or invalid flags,
    as cosign does: an identity and an issuer are both required, each exact or as a regexp."""
    if flags.identity is not None and flags.identity_regexp is not None:
        raise UsageError("give --certificate-identity or --certificate-identity-regexp, not both")
    if flags.issuer is not None and flags.issuer_regexp is not None:
        raise UsageError("give --certificate-oidc-issuer or --certificate-oidc-issuer-regexp, not both")
    if flags.identity is None and flags.identity_regexp is None:
        raise UsageError(
            "keyless verification needs --certificate-identity (or --certificate-identity-regexp): "
            "who must have signed"
        )
    if flags.issuer is None and flags.issuer_regexp is None:
        raise UsageError(
            "keyless verification needs --certificate-oidc-issuer (or --certificate-oidc-issuer-regexp), "
            "e.g. https://token.actions.githubusercontent.com"
        )
    for name, value in vars(flags).items():
        if value is not None and not value.strip():
            flag = name.replace("_", "-").replace("issuer", "oidc-issuer")
            raise UsageError(f"--certificate-{flag} is empty")
    if trusted_root is not None and not trusted_root.is_file():
        raise UsageError(f"trusted root {trusted_root} is not a regular file")
    return KeylessAuthority(
        name=flags.identity or flags.identity_regexp or "keyless",
        issuer=flags.issuer,
        issuer_regexp=_regexp(flags.issuer_regexp, "--certificate-oidc-issuer-regexp"),
        subject=flags.identity,
        subject_regexp=_regexp(flags.identity_regexp, "--certificate-identity-regexp"),
        trusted_root=trusted_root.resolve() if trusted_root is not None else None,
        github_workflow_repository=flags.github_workflow_repository,
        github_workflow_ref=flags.github_workflow_ref,
        github_workflow_name=flags.github_workflow_name,
        github_workflow_trigger=flags.github_workflow_trigger,
        github_workflow_sha=flags.github_workflow_sha,
    )


def _regexp(text: str | None, flag: str) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise UsageError(f"{flag} {text!r} is not a valid regular expression ({exc})") from None


class BlobNotVerified(DeniedError):
    """`verify-blob`: the bundle is not a valid signature of the file by the required signer."""

    def __init__(self, artifact: Path, outcome: SignatureOutcome) -> None:
        super().__init__(f"{artifact}: {outcome.reason.value}: {outcome.detail}")
        self.outcome = outcome


def file_digest(path: Path) -> Digest:
    """SHA-256 of a file, streamed. Raises `UsageError` when it cannot be read."""
    try:
        with open_regular_file(path) as handle:
            return Digest.parse("sha256:" + hashlib.file_digest(handle, "sha256").hexdigest())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def read_evidence_file(path: Path, what: str) -> bytes:
    """A bundle, signature or certificate file's bytes; a file over the cap is read only up to it
    (and then refused as malformed)."""
    try:
        with open_regular_file(path) as handle:
            return handle.read(MAX_BLOB_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


MAX_BLOB_BYTES = 1024 * 1024 * 1024
"""Signatures over the file's bytes (pre-bundle forms) need the file in memory: up to 1 GiB."""


def verify_blob(
    artifact: Path,
    *,
    bundle: Path | None = None,
    signature: Path | None = None,
    certificate: Path | None = None,
    timestamp: Path | None = None,
    key: Path | None = None,
    authority: KeylessAuthority | None = None,
    trusted_root: Path | None = None,
) -> SignatureOutcome:
    """Check that the evidence (a Sigstore bundle, cosign's pre-bundle JSON, or a detached
    signature with its certificate) signs `artifact`: with a public key (and, with `trusted_root`,
    its log entry), or keyless (the full Sigstore checks against `authority`'s root and identity).

    Raises `BlobNotVerified` (exit 3), `UsageError` (exit 2) for unreadable files or bad flags.
    """
    from trust.sigstore.blobs import BlobEvidence, verify_blob_evidence
    from trust.sigstore.trusted_root import load_trusted_root

    if (key is None) == (authority is None):
        raise UsageError("give either --key PUB or --certificate-identity/--certificate-oidc-issuer")
    if (bundle is None) == (signature is None):
        raise UsageError("give --bundle FILE, or --signature FILE (with --certificate for keyless)")
    if bundle is not None and certificate is not None:
        raise UsageError("--certificate goes with --signature; a bundle carries its certificate")
    evidence = BlobEvidence(
        read_evidence_file(bundle, "bundle") if bundle is not None else None,
        read_evidence_file(signature, "signature") if signature is not None else None,
        read_evidence_file(certificate, "certificate") if certificate is not None else None,
        read_evidence_file(timestamp, "timestamp") if timestamp is not None else None,
    )
    digest = file_digest(artifact)
    data = b"" if bundle is not None and _sigstore_bundle(evidence.bundle or b"") else read_artifact(artifact)
    if key is not None:
        from trust.keys.keyfiles import TrustedKey

        root = load_trusted_root(trusted_root) if trusted_root is not None else None
        outcome = verify_blob_evidence(data, digest, evidence, keys=[TrustedKey.from_file(key)], root=root)
    else:
        assert authority is not None
        from trust.sigstore.identity import IdentityPolicy

        root = load_trusted_root(authority.trusted_root)
        outcome = verify_blob_evidence(data, digest, evidence, root=root, policy=IdentityPolicy(authority))
    if not outcome.ok:
        raise BlobNotVerified(artifact, outcome)
    return outcome


def _sigstore_bundle(data: bytes) -> bool:
    return b'"base64Signature"' not in data


def read_artifact(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BLOB_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_BLOB_BYTES:
        raise UsageError(
            f"{path} is over {MAX_BLOB_BYTES} bytes: sign it with a Sigstore bundle (digest-based)"
        )
    return data
