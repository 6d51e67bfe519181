"""`trust attest`: sign an in-toto statement about an image digest and attach it.

The subject is always the manifest digest the reference resolves to from verified bytes, never a
tag. The statement is signed once (DSSE over the PAE) and written in the layouts asked for:
cosign's `.att` tag and/or a Sigstore bundle referrer (`trust.attest.attached`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pull.digest import Digest
from pull.records import dataclass
from pull.reference import Reference
from pull.registry import RegistryClient
from trust.attached import SignatureLocation
from trust.attest.attached import attach_att, attestation_location
from trust.attest.envelope import sign_envelope
from trust.attest.statement import IN_TOTO_PAYLOAD_TYPE, build_statement
from trust.keys.keyfiles import Signer

if TYPE_CHECKING:
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken

    from trust.sigstore.services import RekorLog

ClientFor = Callable[[str], RegistryClient]
FORMATS = ("cosign", "bundle")


@dataclass(frozen=True)
class AttestResult:
    reference: Reference
    digest: Digest
    predicate_type: str
    written: tuple[str, ...]
    """Where it went: `REG/REPO:sha256-….att (layer sha256:…)`, `REG/REPO@sha256:… (bundle referrer)`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "predicateType": self.predicate_type,
            "written": list(self.written),
        }


def attest_image(
    client_for: ClientFor,
    reference: Reference,
    signer: Signer,
    predicate_type: str,
    predicate: Any,
    *,
    formats: Sequence[str] = FORMATS,
    log: RekorLog | None = None,
    timestamp_url: str | None = None,
) -> AttestResult:
    """Attest the digest `reference` resolves to with `signer` (a key, an HSM, a KMS). The bundle
    referrer's signature is logged in `log` and timestamped by `timestamp_url` when given (before
    anything is pushed); the `.att` layer is cosign's plain form, without either."""
    from pull.pipeline import resolve
    from trust.sigstore.sign import attach_bundle

    client = client_for(reference.api_host)
    document = resolve(client, reference)
    statement = build_statement(reference.name, document.digest, predicate_type, predicate)
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement, signer)
    written = []
    if "cosign" in formats:
        location = attestation_location(SignatureLocation.for_image(reference, document.digest))
        layer = attach_att(
            client_for(location.api_host), location, envelope, predicate_type, signer.public_key
        )
        written.append(f"{location} (layer {layer})")
    if "bundle" in formats:
        from trust.sigstore.sign import key_signed_bundle

        bundle = key_signed_bundle(
            signer,
            signed_statement=(envelope.payload, envelope.signatures[0]),
            log=log,
            timestamp_url=timestamp_url,
        )
        referrer = attach_bundle(client, reference.repository, document.descriptor, bundle, predicate_type)
        written.append(f"{reference.registry}/{reference.repository}@{referrer} (bundle referrer)")
    return AttestResult(reference, document.digest, predicate_type, tuple(written))


def attest_image_keyless(
    client_for: ClientFor,
    reference: Reference,
    token: IdentityToken,
    trust_config: ClientTrustConfig,
    predicate_type: str,
    predicate: Any,
) -> tuple[AttestResult, str]:
    """Keyless: sigstore-python signs the statement (Fulcio certificate, Rekor entry) into a
    bundle, pushed as a referrer. Returns the result and the certificate's identity."""
    from pull.pipeline import resolve
    from trust.sigstore.sign import attach_bundle

    client = client_for(reference.api_host)
    document = resolve(client, reference)
    statement = build_statement(reference.name, document.digest, predicate_type, predicate)
    bundle = sign_statement_keyless(statement, token, trust_config)
    referrer = attach_bundle(client, reference.repository, document.descriptor, bundle, predicate_type)
    where = f"{reference.registry}/{reference.repository}@{referrer} (bundle referrer)"
    return AttestResult(reference, document.digest, predicate_type, (where,)), str(token.identity)


def sign_statement_keyless(statement: bytes, token: IdentityToken, trust_config: ClientTrustConfig) -> bytes:
    """A Sigstore bundle (JSON) of `statement` signed keylessly. Signing-service failures are
    `CouldNotCheck` (exit 5): nothing was attached."""
    from sigstore.dsse import Statement
    from sigstore.sign import SigningContext

    from pull.errors import CouldNotCheck

    try:
        context = SigningContext.from_trust_config(trust_config)
        with context.signer(token) as signer:
            return signer.sign_dsse(Statement(statement)).to_json().encode()
    except Exception as exc:  # Fulcio/Rekor unreachable or refusing
        raise CouldNotCheck(f"keyless signing failed: {str(exc).splitlines()[0][:200]}") from None


def attest_blob(data_digest: Digest, name: str, signer: Signer, predicate_type: str, predicate: Any) -> bytes:
    """A key-signed Sigstore bundle (v0.3, DSSE) of a statement about a file's SHA-256."""
    from trust.sigstore.sign import key_signed_bundle

    statement = build_statement(name, data_digest, predicate_type, predicate)
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement, signer)
    return key_signed_bundle(
        signer, signed_statement=(envelope.payload, envelope.signatures[0]), log=None, timestamp_url=None
    )
