"""`trust sign --keyless`: sign an image digest with a Fulcio certificate and attach the bundle.

Thin over sigstore-python: an OIDC identity token (ambient CI credentials through
`sigstore.oidc.detect_credential`, an explicit `--identity-token`, or the interactive browser flow
on a terminal) buys a short-lived Fulcio certificate; sigstore-python signs an in-toto statement
(predicate `https://sigstore.dev/cosign/sign/v1`, subject = the image digest) as DSSE and logs it
in Rekor; the resulting v0.3 bundle is pushed as an OCI referrer of the image, exactly as cosign v3
attaches it and as `trust.attached.fetch_bundles` finds it.

The network parts (token, Fulcio, Rekor) cannot run in tests. Everything around them can: the
token step fails with `NoIdentityToken` (exit 5, "could not check") before any network call when
no credential is available, and `attach_bundle` pushes any bundle to a registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pull.digest import Digest
from pull.errors import CouldNotCheck, UsageError
from pull.manifest import Descriptor
from pull.mediatypes import OCI_EMPTY, OCI_MANIFEST
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.sigstore.bundles import BUNDLE_ARTIFACT_TYPE, COSIGN_SIGN_PREDICATE

if TYPE_CHECKING:
    from sigstore.oidc import IdentityToken

EMPTY_CONFIG = b"{}"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class NoIdentityToken(CouldNotCheck):
    """No OIDC identity token could be obtained, so Fulcio cannot be asked for a certificate."""

    def diagnostics(self) -> str:
        return (
            "In CI, grant the job an OIDC token (GitHub Actions: `permissions: id-token: write`); "
            "elsewhere pass --identity-token, or run on a terminal for the browser flow."
        )


def obtain_identity_token(explicit: str | None, *, interactive: bool) -> IdentityToken:
    """An identity token: `explicit`, else ambient CI credentials, else (on a terminal) the browser
    flow against the public-good OIDC issuer.

    Raises:
        UsageError: `explicit` is not a usable token.
        NoIdentityToken: nothing available (offline, no CI credentials, no terminal).
    """
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    raw = explicit
    if raw is None:
        try:
            raw = detect_credential()
        except IdentityError as exc:
            raise NoIdentityToken(f"ambient OIDC credentials were found but unusable: {exc}") from None
    if raw is None:
        if not interactive:
            raise NoIdentityToken(
                "no identity token for keyless signing: no ambient CI credentials were found and "
                "there is no terminal for the interactive flow"
            )
        raw = _interactive_token()
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        raise UsageError(f"the identity token is not usable: {str(exc).splitlines()[0][:200]}") from None


def _interactive_token() -> str:
    """The browser flow (needs the network: the issuer URL comes from the signing config)."""
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import Issuer

    try:
        config = ClientTrustConfig.production()
        token = Issuer(config.signing_config.get_oidc_url()).identity_token()
    except Exception as exc:  # any network or flow failure means "no token", exit 5
        raise NoIdentityToken(f"the interactive OIDC flow failed: {str(exc).splitlines()[0][:200]}") from None
    return str(token)


def cosign_statement(reference: Reference, digest: Digest) -> dict[str, Any]:
    """The in-toto statement cosign v3 signs for an image digest."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": reference.name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }


def build_bundle_referrer(
    bundle: bytes, subject: Descriptor, predicate_type: str = COSIGN_SIGN_PREDICATE
) -> bytes:
    """The OCI image manifest that attaches `bundle` to `subject` (cosign v3's layout): artifact
    type and single layer of the v0.3 bundle media type, the empty config, `subject` set, the
    statement's predicate type annotated (a signature's, or an attestation's)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_ARTIFACT_TYPE,
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": str(Digest.of_bytes(EMPTY_CONFIG)),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {"mediaType": BUNDLE_ARTIFACT_TYPE, "digest": str(Digest.of_bytes(bundle)), "size": len(bundle)}
        ],
        "subject": {"mediaType": subject.media_type, "digest": str(subject.digest), "size": subject.size},
        # cosign v3 annotates both: what the bundle holds, and the statement's predicate type.
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate_type,
        },
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def attach_bundle(
    client: RegistryClient,
    repository: str,
    subject: Descriptor,
    bundle: bytes,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
) -> Digest:
    """Push `bundle` as a referrer of `subject` (the API, or the `sha256-<hex>` fallback index)."""
    from pull.referrers import push_referrer

    client.push_blob(repository, Digest.of_bytes(EMPTY_CONFIG), len(EMPTY_CONFIG), EMPTY_CONFIG)
    client.push_blob(repository, Digest.of_bytes(bundle), len(bundle), bundle)
    manifest = build_bundle_referrer(bundle, subject, predicate_type)
    return push_referrer(client, repository, manifest, OCI_MANIFEST, subject)


@dataclass(frozen=True)
class KeylessSignResult:
    reference: Reference
    digest: Digest
    referrer: Digest
    identity: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "referrer": str(self.referrer),
            "identity": self.identity,
        }


def sign_image_keyless(
    client_for: Callable[[str], RegistryClient], reference: Reference, token: IdentityToken
) -> KeylessSignResult:
    """Resolve `reference`, sign its digest with sigstore-python (public-good Fulcio and Rekor),
    attach the bundle. Network failures of the signing services are `CouldNotCheck` (exit 5)."""
    from sigstore.dsse import Statement
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    from pull.pipeline import resolve

    client = client_for(reference.api_host)
    document = resolve(client, reference)
    statement = Statement(json.dumps(cosign_statement(reference, document.digest)).encode())
    try:
        context = SigningContext.from_trust_config(ClientTrustConfig.production())
        with context.signer(token) as signer:
            bundle = signer.sign_dsse(statement).to_json().encode()
    except Exception as exc:  # Fulcio/Rekor/TUF unreachable or refusing: nothing was attached
        raise CouldNotCheck(f"keyless signing failed: {str(exc).splitlines()[0][:200]}") from None
    referrer = attach_bundle(client, reference.repository, document.descriptor, bundle)
    return KeylessSignResult(reference, document.digest, referrer, str(token.identity))
