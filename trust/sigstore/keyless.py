"""Keyless Sigstore verification: Fulcio certificates bound to an OIDC identity, logged in Rekor.

Two carriers of a keyless signature of an image digest are checked, each against a trusted root
(`trust.sigstore.trusted_root`) and an identity policy (`trust.sigstore.identity`), with no network call:

- **Sigstore bundles** (v0.1 to v0.3) attached as referrers, or given as files to `verify-blob`:
  sigstore-python's `Verifier` does the whole chain of checks (certificate chain at the logged
  time, embedded SCT, identity, inclusion proof and promise, signature, log-entry consistency).
  For an image, a DSSE bundle's in-toto statement must be a cosign signature naming the digest;
  a message-signature bundle must sign the manifest itself (its message digest is the digest).
- **Legacy cosign keyless `.sig` layers**: the simple-signing payload with annotations
  `dev.cosignproject.cosign/signature`, `dev.sigstore.cosign/certificate` (PEM leaf),
  `dev.sigstore.cosign/chain` (PEM intermediates, untrusted) and `dev.sigstore.cosign/bundle`
  (the Rekor SET). These cannot become a sigstore `Bundle`: sigstore-python requires an
  inclusion proof, and cosign wrote only the promise. So the checks are composed here, in this
  order: signature under the certificate's key; SET under the trusted root's Rekor key for that
  log ID (`trust.cosign.simple_signing.verify_rekor_set`: RFC 8785 canonical JSON, and the
  logged entry records this payload's hash, this signature and this certificate's key); the log
  key valid at the integrated time; the certificate chains to a Fulcio CA of the root *at the integrated time*
  (cryptography's verifier, configured as sigstore-python configures it); its embedded SCT
  verifies under the root's CT keys (sigstore-python's `verify_sct`); code-signing usage; the
  identity policy. Then the payload is a cosign payload for this digest and repository.
  A `dev.sigstore.cosign/rfc3161timestamp` annotation (cosign `--timestamp-server-url`: JSON
  `{"SignedRFC3161Timestamp": base64 DER TimeStampResp}`) is a second proof of the signing time:
  its message imprint must be the hash of the raw signature bytes, and it must be signed by a
  `timestampAuthorities` entry of the root valid at its genTime, the end inclusive
  (`trust.sigstore.verifier.verify_rfc3161`, over rfc3161-client's CMS verification). A layer
  needs a SET or a timestamp (as cosign accepts
  `--tlog-upload=false` with a TSA); each one present must verify, and the certificate chain is
  checked at every time they prove.

Every failure is a `SignatureOutcome` (one per signature), never an exception: one bad signature
never hides a good one. `Reason.WRONG_IDENTITY` details name the expected and the actual identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sigstore.errors import Error as SigstoreError

from pull.digest import Digest
from pull.errors import DeniedError, IntegrityError
from pull.mediatypes import COSIGN_SIMPLESIGNING
from pull.records import dataclass
from pull.reference import Reference
from pull.strictjson import loads as strict_json
from trust.attached import AttachedSignatures
from trust.cosign.simple_signing import (
    MAX_PAYLOAD_BYTES,
    RFC3161_TIMESTAMP_ANNOTATION,
    PayloadLoader,
    Reason,
    RekorEntry,
    SignatureLayer,
    SignatureOutcome,
    parse_payload,
    require_verified,
    verify_rekor_set,
)
from trust.errors import KeyLoadError, SignatureInvalid, UntrustedSignatures
from trust.keys.keyfiles import check_public_key, verify_bytes
from trust.sigstore.authority import KeylessAuthority
from trust.sigstore.identity import (
    CertificateIdentity,
    IdentityMismatch,
    IdentityPolicy,
    read_identity,
    unreadable_certificate_errors,
)
from trust.sigstore.trusted_root import LoadedRoot, load_trusted_root

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from trust.cosign.signing import ClientFor, VerifyResult

MAX_CERTIFICATE_PEM_BYTES = 64 * 1024
"""A Fulcio leaf is ~1 kB of PEM; larger certificate annotations are refused as hostile."""
MAX_CHAIN_CERTIFICATES = 8
"""Intermediates accepted from a `dev.sigstore.cosign/chain` annotation."""
_SHA256_OID, _SHA384_OID, _SHA512_OID = (f"2.16.840.1.101.3.4.2.{n}" for n in (1, 2, 3))
MAX_TIMESTAMP_ANNOTATION_BYTES = 64 * 1024
"""A TSA response with its certificate chain is a few kB; larger timestamp annotations are refused."""
BAD_TIMESTAMP = Reason.BAD_TIMESTAMP
"""The outcome of a timestamp that does not prove the signing time."""


# --- legacy cosign keyless `.sig` layers -------------------------------------------------------


@dataclass(frozen=True)
class SigningTime:
    """What proved when a legacy keyless signature was made: a Rekor SET, a timestamp, or both."""

    rekor: RekorEntry | None
    timestamped_at: datetime | None

    def describe(self) -> str:
        proofs = []
        if self.rekor is not None:
            proofs.append(f"logged in Rekor at index {self.rekor.log_index}")
        if self.timestamped_at is not None:
            proofs.append(f"timestamped at {self.timestamped_at:%Y-%m-%dT%H:%M:%SZ}")
        return " and ".join(proofs)


def verify_legacy_signature(
    payload: bytes, layer: SignatureLayer, root: LoadedRoot, policy: IdentityPolicy
) -> tuple[CertificateIdentity, SigningTime]:
    """The cryptographic checks of one legacy keyless layer over `payload` (see the module doc).

    Says nothing about what the payload means; the caller checks that. Raises `SignatureInvalid`
    with the `Reason` of the first failed check.
    """
    from cryptography import x509

    def fail(reason: Reason, detail: str) -> SignatureInvalid:
        return SignatureInvalid(reason, detail)

    if not layer.certificate:
        raise fail(Reason.UNKNOWN_KEY, "no Fulcio certificate: not a keyless signature")
    certificate_pem = layer.certificate.encode("utf-8", "replace")
    if len(certificate_pem) > MAX_CERTIFICATE_PEM_BYTES:
        raise fail(Reason.MALFORMED, f"certificate annotation larger than {MAX_CERTIFICATE_PEM_BYTES} bytes")
    try:
        leaf = x509.load_pem_x509_certificate(certificate_pem)
        public_key = leaf.public_key()
        _ = leaf.extensions  # parsed on first use: a broken one is malformed here, not a crash later
    except unreadable_certificate_errors() as exc:
        raise fail(
            Reason.MALFORMED, f"certificate annotation is not a PEM certificate ({str(exc)[:80]})"
        ) from None
    intermediates = _chain_certificates(layer.chain or "")
    signature_b64 = layer.signature or ""
    signature = _b64(signature_b64)
    if signature is None:
        raise fail(Reason.MALFORMED, "layer has no base64 signature annotation")

    try:
        key = check_public_key(public_key, "certificate key")
    except KeyLoadError:
        raise fail(Reason.UNTRUSTED_CERTIFICATE, "the certificate's key type is not accepted") from None
    if not verify_bytes(key, payload, signature):
        raise fail(Reason.BAD_SIGNATURE, "signature does not verify with the certificate's key")

    timestamp = layer.annotations.get(RFC3161_TIMESTAMP_ANNOTATION)
    if layer.bundle is None and timestamp is None:
        raise fail(
            Reason.BAD_SET,
            "no Rekor SET (dev.sigstore.cosign/bundle) and no RFC 3161 timestamp: "
            "the signing time is unproven",
        )
    entry: RekorEntry | None = None
    proven_times: list[datetime] = []
    if layer.bundle is not None:
        logs = root.rekor_logs
        entry = verify_rekor_set(
            layer.bundle, [log.key for log in logs], payload, signature_b64, certificate_pem
        )
        try:
            signed_at = datetime.fromtimestamp(entry.integrated_time, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise fail(Reason.BAD_SET, f"integratedTime {entry.integrated_time} is not a time") from None
        log = next(log for log in logs if log.log_id == entry.log_id)
        if not log.valid_at(signed_at):
            raise fail(Reason.BAD_SET, f"the Rekor log's key was not valid at {signed_at:%Y-%m-%dT%H:%M:%SZ}")
        proven_times.append(signed_at)
    timestamped_at = None
    if timestamp is not None:
        timestamped_at = verify_signature_timestamp(timestamp, signature, root)
        proven_times.append(timestamped_at)

    for moment in proven_times:  # as sigstore-python: the chain must hold at every proven time
        verify_certificate_chain(leaf, intermediates, root, moment)
    try:
        policy.verify(leaf)
    except IdentityMismatch as exc:
        raise fail(Reason.WRONG_IDENTITY, str(exc)) from None
    return read_identity(leaf), SigningTime(entry, timestamped_at)


def verify_signature_timestamp(annotation: str, signature: bytes, root: LoadedRoot) -> datetime:
    """The genTime of the RFC 3161 timestamp in a `dev.sigstore.cosign/rfc3161timestamp`
    annotation, once it is shown to timestamp `signature` (the raw signature bytes, as cosign
    requests it) and to be signed by a timestamp authority of `root` valid at that time.

    The CMS checks (signed attributes, the TSA's chain to the authority's root at genTime, its
    timeStamping usage, the embedded certificate being the authority's) are sigstore-python's
    `Verifier._verify_signed_timestamp` over rfc3161-client. Raises `SignatureInvalid`.
    """
    from rfc3161_client import PKIStatus, decode_timestamp_response

    def malformed(detail: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.MALFORMED, f"RFC 3161 timestamp annotation: {detail}")

    def bad(detail: str) -> SignatureInvalid:
        return SignatureInvalid(BAD_TIMESTAMP, f"RFC 3161 timestamp: {detail}")

    if len(annotation) > MAX_TIMESTAMP_ANNOTATION_BYTES:
        raise malformed(f"larger than {MAX_TIMESTAMP_ANNOTATION_BYTES} bytes")
    try:
        document = strict_json(annotation, "timestamp annotation")
    except (ValueError, UnicodeError):
        raise malformed("not JSON") from None
    encoded = document.get("SignedRFC3161Timestamp") if isinstance(document, dict) else None
    der = _b64(encoded) if isinstance(encoded, str) else None
    if der is None:
        raise malformed("no base64 SignedRFC3161Timestamp")
    try:
        response = decode_timestamp_response(der)
        # rfc3161-client's verifier accepts only `granted`: say so before asking it
        info = response.tst_info if response.status == PKIStatus.GRANTED else None
        imprint = info.message_imprint if info is not None else None
    except ValueError as exc:  # rfc3161-client's ASN.1 errors, and unknown status values
        raise malformed(f"not a DER TimeStampResp ({str(exc)[:80]})") from None
    if info is None or imprint is None:
        raise bad(f"the TSA did not grant it (status {response.status})")
    stamped_at = info.gen_time if info.gen_time.tzinfo else info.gen_time.replace(tzinfo=UTC)
    hashers = {_SHA256_OID: hashlib.sha256, _SHA384_OID: hashlib.sha384, _SHA512_OID: hashlib.sha512}
    hasher = hashers.get(imprint.hash_algorithm.dotted_string)
    if hasher is None:
        raise bad(f"message imprint hash {imprint.hash_algorithm.dotted_string} is not SHA-2")
    if imprint.message != hasher(signature).digest():
        raise bad("its message imprint is not the hash of this signature")
    if not root.root.get_timestamp_authorities():
        raise bad(f"{root.source} lists no timestamp authorities")
    # Checks the imprint again, then the signature and chains; None when no authority vouches.
    from trust.sigstore.verifier import verify_rfc3161

    vouched = verify_rfc3161(der, signature, root, "RFC 3161 timestamp annotation")
    if vouched is None:
        raise bad(
            f"not signed by a timestamp authority of {root.source} valid at {stamped_at:%Y-%m-%dT%H:%M:%SZ}"
        )
    return stamped_at


def verify_certificate_chain(
    leaf: Certificate, intermediates: Sequence[Certificate], root: LoadedRoot, at: datetime
) -> list[Certificate]:
    """The chain from `leaf` to a Fulcio CA of `root`, valid at `at`, with a verified embedded SCT
    and code-signing usage. Raises `SignatureInvalid` (untrusted-certificate)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.verification import (
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
    )
    from cryptography.x509.verification import VerificationError as ChainError
    from sigstore._internal.sct import verify_sct
    from sigstore._internal.trust import KeyringPurpose

    def untrusted(detail: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.UNTRUSTED_CERTIFICATE, detail)

    # As sigstore-python's Verifier: web-PKI defaults except the EKU (Fulcio issues code-signing
    # certificates, checked below), every Fulcio certificate of the root as a trust anchor.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store(root.fulcio_certificates))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(leaf, list(intermediates)).chain[1:]
    except (ChainError, x509.UnsupportedGeneralNameType) as exc:
        raise untrusted(
            f"the certificate does not chain to a Fulcio CA of {root.source} at "
            f"{at:%Y-%m-%dT%H:%M:%SZ} ({str(exc)[:120]})"
        ) from None
    try:
        verify_sct(leaf, chain, root.root.ct_keyring(KeyringPurpose.VERIFY))
    except SigstoreError as exc:
        raise untrusted(f"certificate transparency: {str(exc)[:160]}") from None
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise untrusted("the certificate lacks key usage extensions") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise untrusted("the certificate is not a code-signing certificate")
    return chain


def _chain_certificates(text: str) -> list[Certificate]:
    """Untrusted intermediates from the chain annotation; they only help build a path to the root."""
    from cryptography import x509

    if not text.strip():
        return []
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_CERTIFICATE_PEM_BYTES * MAX_CHAIN_CERTIFICATES:
        raise SignatureInvalid(Reason.MALFORMED, "chain annotation is too large")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except unreadable_certificate_errors():
        raise SignatureInvalid(Reason.MALFORMED, "chain annotation is not PEM certificates") from None
    if len(certificates) > MAX_CHAIN_CERTIFICATES:
        raise SignatureInvalid(
            Reason.MALFORMED, f"chain annotation holds over {MAX_CHAIN_CERTIFICATES} certificates"
        )
    return certificates


def _check_legacy_layer(
    index: int,
    layer: SignatureLayer,
    loader: PayloadLoader,
    expected: Digest,
    repository: str,
    root: LoadedRoot,
    policy: IdentityPolicy,
    ignore_reference: bool,
) -> SignatureOutcome:
    state: dict[str, Any] = {}

    def fail(reason: Reason, detail: str) -> SignatureInvalid:
        return SignatureInvalid(reason, detail)

    try:
        if layer.media_type != COSIGN_SIMPLESIGNING:
            raise fail(Reason.MALFORMED, f"layer media type {layer.media_type[:80]!r} is not simple signing")
        if layer.size > MAX_PAYLOAD_BYTES:
            raise fail(Reason.MALFORMED, f"payload of {layer.size} bytes exceeds {MAX_PAYLOAD_BYTES}")
        if not layer.certificate:
            raise fail(Reason.UNKNOWN_KEY, "signed with a key, not keyless (no Fulcio certificate)")
        try:
            payload = loader(layer)
        except IntegrityError as exc:
            raise fail(Reason.MALFORMED, f"payload blob: {exc}") from None
        if len(payload) != layer.size or Digest.of_bytes(payload, layer.digest.algorithm) != layer.digest:
            raise fail(Reason.MALFORMED, "payload does not match its layer descriptor")
        try:
            identity, proven = verify_legacy_signature(payload, layer, root, policy)
        except SignatureInvalid as exc:
            if exc.reason == Reason.WRONG_IDENTITY:
                state["key"] = _identity_of(layer)
            raise
        state["key"] = str(identity)
        parsed = parse_payload(payload)
        state["payload"] = parsed
        if parsed.manifest_digest != expected:
            raise fail(Reason.DIGEST_MISMATCH, f"signed digest is {parsed.manifest_digest}, not {expected}")
        if not ignore_reference and parsed.repository != repository:
            raise fail(
                Reason.WRONG_REPOSITORY,
                f"signed for repository {parsed.docker_reference[:200]}, not {repository}",
            )
    except SignatureInvalid as exc:
        return SignatureOutcome(
            index, layer.digest, Reason(exc.reason), f"keyless: {exc}", state.get("key"), state.get("payload")
        )
    return SignatureOutcome(
        index,
        layer.digest,
        Reason.VALID,
        f"keyless: signed by {identity}, {proven.describe()}",
        str(identity),
        parsed,
        proven.rekor,
    )


def _identity_of(layer: SignatureLayer) -> str | None:
    """The identity the layer's certificate names (for messages only; not trusted)."""
    from cryptography import x509

    try:
        return str(read_identity(x509.load_pem_x509_certificate((layer.certificate or "").encode())))
    except unreadable_certificate_errors():
        return None


# --- Sigstore bundles --------------------------------------------------------------------------


def verify_keyless_bundle(
    index: int,
    blob_digest: Digest,
    data: bytes,
    expected: Digest,
    root: LoadedRoot,
    policy: IdentityPolicy,
    *,
    any_predicate: bool = False,
) -> SignatureOutcome:
    """One outcome for one bundle over `expected` (an image digest, or a file's SHA-256), by
    `trust.sigstore.verifier` (the full Sigstore checks against `root`, then `policy`).

    DSSE: the in-toto statement must name `expected` among its subjects, and be a cosign signature
    unless `any_predicate` (`verify-blob`: any statement about the file). Message signature: the
    signed message's digest must be `expected`.
    """
    from trust.sigstore.verifier import verify_sigstore_bundle

    def outcome(
        reason: Reason, detail: str, key: str | None = None, entry: RekorEntry | None = None
    ) -> SignatureOutcome:
        return SignatureOutcome(index, blob_digest, reason, f"sigstore bundle: {detail}", key, None, entry)

    wanted = bytes.fromhex(expected.hex) if expected.algorithm == "sha256" else None
    try:
        verified = verify_sigstore_bundle(data, root=root, policy=policy, message_digest=wanted)
    except SignatureInvalid as exc:
        reason = Reason(exc.reason)
        if reason is Reason.UNTRUSTED_CERTIFICATE:
            return outcome(reason, f"{exc} (trusted root: {root.source})")
        actual = _claimed_identity(data) if reason is not Reason.MALFORMED else None
        return outcome(reason, str(exc), actual)
    entry = verified.log_entries[0] if verified.log_entries else None
    if verified.payload_type is not None:
        problem = statement_problem(verified.payload_type, verified.payload or b"", expected, any_predicate)
        if problem is not None:
            return outcome(problem[0], problem[1], verified.signer, entry)
    elif wanted is None:
        return outcome(Reason.DIGEST_MISMATCH, f"a message signature is over a SHA-256, not {expected}")
    return outcome(Reason.VALID, verified.describe(), verified.signer, entry)


def statement_problem(
    payload_type: str, payload: bytes, expected: Digest, any_predicate: bool
) -> tuple[Reason, str] | None:
    """Why a verified DSSE payload is not a statement about `expected` (None when it is)."""
    from trust.sigstore.bundles import BundleError, Envelope, statement_subjects

    try:
        subjects = statement_subjects(Envelope(payload_type, payload, ()), any_predicate=any_predicate)
    except BundleError as exc:
        return Reason.MALFORMED, str(exc)
    if expected.hex not in subjects.get(expected.algorithm, set()):
        return Reason.DIGEST_MISMATCH, f"statement is about another digest, not {expected}"
    return None


def _claimed_identity(data: bytes) -> str | None:
    """The identity a bundle's certificate names (for messages only; not trusted)."""
    from cryptography import x509

    try:
        material = strict_json(data, "bundle").get("verificationMaterial") or {}
        der = (material.get("certificate") or {}).get("rawBytes") or (
            (material.get("x509CertificateChain") or {}).get("certificates") or [{}]
        )[0].get("rawBytes")
        return str(read_identity(x509.load_der_x509_certificate(base64.b64decode(der))))
    except Exception:  # only a hint for the message: anything unreadable is no claim
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]


# --- entry points ------------------------------------------------------------------------------


def verify_keyless_attached(
    attached: AttachedSignatures,
    expected: Digest,
    repository: str | Reference,
    authority: KeylessAuthority,
    *,
    ignore_reference: bool = False,
) -> Sequence[SignatureOutcome]:
    """One outcome per signature attached to `expected`, judged against a keyless identity.

    `.sig` layers first (in order), then bundles, as `trust.attached.verify_attached` numbers them.
    Raises `TrustedRootError` (exit 2) when the authority's trusted root cannot be loaded.
    """
    root = load_trusted_root(authority.trusted_root)
    policy = IdentityPolicy(authority)
    name = repository.name if isinstance(repository, Reference) else Reference.parse(repository).name
    outcomes = [
        _check_legacy_layer(i, layer, attached.loader, expected, name, root, policy, ignore_reference)
        for i, layer in enumerate(attached.layers)
    ]
    for blob_digest, data in attached.bundles:
        outcomes.append(verify_keyless_bundle(len(outcomes), blob_digest, data, expected, root, policy))
    return outcomes


def verify_image_keyless(
    client_for: ClientFor,
    reference: Reference,
    authority: KeylessAuthority,
    *,
    ignore_reference: bool = False,
    signature_repository: str | None = None,
) -> VerifyResult:
    """`trust verify --certificate-identity …`: resolve `reference` to a digest from verified bytes,
    find its `.sig` layers and bundle referrers, judge each against `authority`."""
    from pull.pipeline import resolve
    from trust.attached import SignatureLocation, discover, fetch_bundles
    from trust.cosign.signing import VerifyResult

    load_trusted_root(authority.trusted_root)  # a bad --trusted-root is a usage error before any fetch
    document = resolve(client_for(reference.api_host), reference)
    location = SignatureLocation.for_image(reference, document.digest, signature_repository)
    attached = discover(client_for(location.api_host), reference.repository, document.digest, location)
    if location.api_host != reference.api_host:
        bundles = fetch_bundles(client_for(reference.api_host), reference.repository, document.digest)
        attached = AttachedSignatures(attached.layers, attached.loader, bundles)
    outcomes = verify_keyless_attached(
        attached, document.digest, reference, authority, ignore_reference=ignore_reference
    )
    return VerifyResult(reference, document.digest, location, tuple(outcomes))


class KeylessDenied(DeniedError):
    """Signatures were found but none by the required identity; the message carries the first reason."""

    def diagnostics(self) -> str:
        return (
            "Compare the identity and issuer named above with --certificate-identity and "
            "--certificate-oidc-issuer; a private Sigstore needs --trusted-root."
        )


def require_keyless_verified(outcomes: Sequence[SignatureOutcome], subject: str) -> list[SignatureOutcome]:
    """`trust.cosign.simple_signing.require_verified`, with the reason of each failed signature in the message
    (so a wrong identity names the expected and the actual one on the command line)."""
    try:
        return require_verified(outcomes, subject)
    except UntrustedSignatures as exc:
        details = "; ".join(f"{o.reason.value}: {o.detail}" for o in outcomes[:3])
        more = f" (and {len(outcomes) - 3} more)" if len(outcomes) > 3 else ""
        raise KeylessDenied(f"{exc}: {details}{more}") from None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if text else None
    except (binascii.Error, ValueError):
        return None
