"""Sigstore bundle verification, done by trust: every bundle shape the ecosystem writes in 2026.

sigstore-python's `Verifier` (4.5) cannot verify several bundles that sigstore-go and sigstore-js
accept, so trust composes the checks itself from sigstore-python's and cryptography's primitives
(Merkle inclusion, signed checkpoints, SETs, SCTs, chain building, rfc3161-client's CMS checks):

- key-signed bundles (`verificationMaterial.publicKey`) with their log entries checked against a
  trusted root (sigstore-python requires a certificate);
- log entries of kind `intoto` (0.0.1, 0.0.2) and `dsse` 0.0.2 as well as `hashedrekord` 0.0.1/0.0.2
  and `dsse` 0.0.1 (sigstore-python: "Integrated time only supported for dsse/hashedrekord 0.0.1");
- several log entries in one bundle (each must verify);
- a timestamp exactly at the end of a timestamp authority's validity (the trusted-root
  specification makes the end inclusive; sigstore-python compares with `<`).

The order of the checks follows the Sigstore client specification: the content's signature under
the signer's key; every log entry (a known log, inclusion proof under a signed checkpoint, the
SET, the entry's body records this signature, this key and this content); the verified times
(SETs' integrated times, RFC 3161 timestamps of a listed authority, end inclusive); with a
certificate, its chain to a Fulcio CA of the root at each verified time, the embedded SCT, code
signing usage, and the identity policy. Every failure is `SignatureInvalid` with a `Reason`; an
exception from a library while judging one part (sigstore-python raises `AttributeError` on some
malformed entries) is a malformed outcome naming that part, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pull.records import dataclass, field
from trust.cosign.simple_signing import Reason, RekorEntry
from trust.errors import KeyLoadError, SignatureInvalid
from trust.keys.keyfiles import PublicKey, TrustedKey, check_public_key, verify_bytes

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from trust.sigstore.identity import IdentityPolicy
    from trust.sigstore.trusted_root import LoadedRoot

MAX_LOG_ENTRIES = 8
"""Log entries accepted in one bundle (cosigned logs write a few; more is hostile)."""
MAX_TIMESTAMPS = 32
"""As sigstore-go and sigstore-python: more signed timestamps than this is a denial of service."""


@dataclass(frozen=True)
class VerifiedTime:
    source: str
    """"transparency log" or "timestamp authority"."""
    time: datetime


@dataclass(frozen=True)
class VerifiedBundle:
    """What a bundle was shown to say. `payload_type`/`payload` are the DSSE envelope's (None for a
    message signature); `signer` names the identity or the trusted key."""

    signer: str
    kind: str
    payload_type: str | None
    payload: bytes | None
    message_digest: bytes | None
    certificate: Certificate | None
    key_name: str | None
    log_entries: tuple[RekorEntry, ...] = ()
    times: tuple[VerifiedTime, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        parts = [f"signed by {self.signer}"]
        if self.log_entries:
            parts.append(
                ", ".join(f"logged in Rekor at index {entry.log_index}" for entry in self.log_entries)
            )
        stamps = [t for t in self.times if t.source == "timestamp authority"]
        if stamps:
            parts.append(f"timestamped at {stamps[0].time:%Y-%m-%dT%H:%M:%SZ}")
        return ", ".join(parts) + f" ({self.kind})"


class _Fail:
    """Shorthands for `SignatureInvalid` of each reason."""

    @staticmethod
    def malformed(detail: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.MALFORMED, detail)

    @staticmethod
    def log(detail: str) -> SignatureInvalid:
        return SignatureInvalid(Reason.BAD_SET, detail)


def verify_sigstore_bundle(
    data: bytes,
    *,
    root: LoadedRoot | None,
    policy: IdentityPolicy | None = None,
    keys: Sequence[TrustedKey] = (),
    message_digest: bytes | None = None,
) -> VerifiedBundle:
    """Verify the Sigstore bundle `data` (v0.1 to v0.3, message signature or DSSE).

    Keyless (a Fulcio certificate): needs `root` and `policy`. Key-signed (`publicKey`): one of
    `keys` must have signed; with `root` its log entries are verified too (at least one is
    required), without it they are not looked at (as `cosign verify --key --insecure-ignore-tlog`).
    `message_digest`: the SHA-256 a message signature must be over (the artifact's). What a DSSE
    payload means is the caller's business. Raises `SignatureInvalid`.
    """
    from cryptography import x509

    from trust.sigstore.identity import IdentityMismatch, unreadable_certificate_errors

    bundle = _parse(data)
    material = bundle.verification_material
    certificate = _leaf_certificate(bundle)
    envelope, message = bundle.dsse_envelope, bundle.message_signature
    if (envelope is None) == (message is None):
        raise _Fail.malformed("a bundle holds exactly one of dsseEnvelope and messageSignature")
    if envelope is not None and not envelope.signatures:
        raise _Fail.malformed("dsseEnvelope has no signatures")

    # (1) the content's signature under the signer's key
    candidates: list[tuple[str, PublicKey]]
    if certificate is not None:
        if root is None or policy is None:
            raise SignatureInvalid(
                Reason.UNKNOWN_KEY, "a keyless bundle (Fulcio certificate), not signed with a key"
            )
        try:
            candidates = [("certificate", check_public_key(certificate.public_key(), "certificate key"))]
        except (KeyLoadError, *unreadable_certificate_errors()):  # type: ignore[misc]
            raise SignatureInvalid(
                Reason.UNTRUSTED_CERTIFICATE, "the certificate's key type is not accepted"
            ) from None
    elif material.public_key is not None:
        if not keys:
            raise SignatureInvalid(
                Reason.UNKNOWN_KEY, "signed with a key, not keyless (no Fulcio certificate)"
            )
        candidates = [(key.name, key.public_key) for key in keys]
    else:
        raise _Fail.malformed("the bundle has no certificate and no public key")

    if message is not None:
        if message.message_digest is None or message.message_digest.algorithm.name != "SHA2_256":
            raise _Fail.malformed("the message signature has no SHA2_256 message digest")
        signed_digest = message.message_digest.digest
        if message_digest is not None and signed_digest != message_digest:
            raise SignatureInvalid(
                Reason.DIGEST_MISMATCH, f"the signed message is not sha256:{message_digest.hex()}"
            )
        signer = next(
            (
                (name, key)
                for name, key in candidates
                if _verify_prehashed(key, signed_digest, message.signature)
            ),
            None,
        )
        signatures = [message.signature]
        signed_bytes = None
    else:
        assert envelope is not None
        from trust.sigstore.bundles import pae

        signed_bytes = pae(envelope.payload_type, envelope.payload)
        signatures = [s.sig for s in envelope.signatures]
        signer = next(
            (
                (name, key)
                for name, key in candidates
                for sig in signatures
                if verify_bytes(key, signed_bytes, sig)
            ),
            None,
        )
        signed_digest = None
    if signer is None:
        if certificate is not None:
            raise SignatureInvalid(
                Reason.BAD_SIGNATURE, "signature does not verify with the certificate's key"
            )
        raise SignatureInvalid(
            Reason.UNKNOWN_KEY, f"the bundle's signature verifies with no trusted key ({len(keys)} checked)"
        )
    signer_name, signer_key = signer
    used_signatures = [
        sig
        for sig in signatures
        if (
            _verify_prehashed(signer_key, signed_digest, sig)
            if signed_digest is not None
            else verify_bytes(signer_key, signed_bytes or b"", sig)
        )
    ]
    kind = "DSSE" if envelope is not None else "message signature"

    if root is None:  # key-signed, the log not asked for
        return VerifiedBundle(
            signer_name,
            kind,
            envelope.payload_type if envelope is not None else None,
            envelope.payload if envelope is not None else None,
            signed_digest,
            None,
            signer_name,
        )

    # (2) the verified times: RFC 3161 timestamps now, the integrated times of entries with a
    # promise (SET) once (4) has verified every SET; as sigstore-python, the certificate is judged
    # first, so an unknown log or a bad entry does not hide a certificate from another instance.
    entries = list(material.tlog_entries or [])
    if not entries:
        raise _Fail.malformed("the bundle has no transparency log entry")
    if len(entries) > MAX_LOG_ENTRIES:
        raise _Fail.malformed(f"the bundle has over {MAX_LOG_ENTRIES} log entries")
    stamps = []
    if material.timestamp_verification_data is not None:
        stamps = list(material.timestamp_verification_data.rfc3161_timestamps or [])
    if len(stamps) > MAX_TIMESTAMPS:
        raise SignatureInvalid(Reason.BAD_TIMESTAMP, f"over {MAX_TIMESTAMPS} signed timestamps")
    if len({s.signed_timestamp for s in stamps}) != len(stamps):
        raise SignatureInvalid(Reason.BAD_TIMESTAMP, "a signed timestamp appears twice")
    times: list[VerifiedTime] = []
    for number, stamp in enumerate(stamps):
        moment = verify_rfc3161(stamp.signed_timestamp, signatures[0], root, f"timestamp {number}")
        if moment is not None:
            times.append(VerifiedTime("timestamp authority", moment))
    times += [
        VerifiedTime("transparency log", moment)
        for entry in entries
        if (moment := _promised_time(entry)) is not None
    ]

    # (3) the certificate at every verified time, and who it names
    if certificate is not None:
        from trust.sigstore.identity import read_identity
        from trust.sigstore.keyless import verify_certificate_chain

        if not times:
            raise _Fail.log(
                "no verified time: no log entry with a signed entry timestamp and no signed timestamp"
            )
        intermediates = _bundle_intermediates(bundle)
        for verified_time in times:
            verify_certificate_chain(certificate, intermediates, root, verified_time.time)
        try:
            policy_check: Callable[[Any], None] = policy.verify  # type: ignore[union-attr]
            policy_check(certificate)
        except IdentityMismatch as exc:
            raise SignatureInvalid(Reason.WRONG_IDENTITY, str(exc)) from None
        except (x509.ExtensionNotFound, ValueError) as exc:
            raise _Fail.malformed(f"certificate: {_first_line(exc)}") from None
        signer_name = str(read_identity(certificate))

    # (4) every log entry: a known log, its inclusion proof and SET, a body that records this
    subject = _EntrySubject(
        signatures=used_signatures,
        key=signer_key,
        certificate=certificate,
        message_digest=signed_digest,
        envelope=envelope,
    )
    v01 = bundle.media_type.endswith("version=0.1")
    logged = [
        _verify_log_entry(number, entry, root, subject, v01=v01) for number, entry in enumerate(entries)
    ]
    return VerifiedBundle(
        signer_name,
        kind,
        envelope.payload_type if envelope is not None else None,
        envelope.payload if envelope is not None else None,
        signed_digest,
        certificate,
        None if certificate is not None else signer_name,
        tuple(logged),
        tuple(times),
    )


# --- parsing ---------------------------------------------------------------------------------------


def _parse(data: bytes) -> Any:
    from sigstore_models.bundle.v1 import Bundle

    from trust.sigstore.bundles import BundleError, parse_bundle

    try:
        parse_bundle(data)  # size cap, duplicate keys, media type, shape
    except BundleError as exc:
        raise _Fail.malformed(str(exc)) from None
    try:
        return Bundle.from_json(_with_proto3_defaults(data))
    except Exception as exc:  # pydantic's ValidationError and anything the models raise
        raise _Fail.malformed(f"bundle: {_validation_detail(exc)}") from None


def _with_proto3_defaults(data: bytes) -> bytes:
    """The bundle with the log-entry fields proto3's JSON mapping omits at their default put back.

    A bundle is a protobuf message in JSON, where a field holding its default (0, an empty list)
    is left out. The first entry of a log (Rekor v2, whose logs start empty) has `logIndex` 0 and,
    in a one-entry tree, no inclusion `hashes`: cosign (sigstore-go) writes it without them and
    reads it back; sigstore-python's models require them. Only absent fields are filled, with the
    value their absence means; anything present is judged as written."""
    doc = json.loads(data)
    material = doc.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if not isinstance(entries, list):
        return data
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        entry.setdefault("logIndex", "0")
        proof = entry.get("inclusionProof")
        if isinstance(proof, dict):
            proof.setdefault("logIndex", "0")
            proof.setdefault("hashes", [])
    return json.dumps(doc).encode()


def _validation_detail(exc: Exception) -> str:
    """pydantic's first error as `where: what` (`verificationMaterial.tlogEntries.0…: …`)."""
    errors = getattr(exc, "errors", None)
    try:
        first = errors()[0] if callable(errors) else None
    except Exception:  # not a pydantic error after all
        first = None
    if not isinstance(first, dict):
        return _first_line(exc)
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {str(first.get('msg', ''))[:160]}"


def _leaf_certificate(bundle: Any) -> Certificate | None:
    from cryptography import x509

    from trust.sigstore.identity import unreadable_certificate_errors

    material = bundle.verification_material
    der: bytes | None = None
    if material.certificate is not None:
        der = material.certificate.raw_bytes
    elif material.x509_certificate_chain is not None:
        chain = material.x509_certificate_chain.certificates
        if not chain:
            raise _Fail.malformed("the certificate chain is empty")
        der = chain[0].raw_bytes
    if der is None:
        return None
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = certificate.extensions  # parsed on first use: a broken one is malformed here
    except unreadable_certificate_errors() as exc:
        raise _Fail.malformed(f"the bundle's certificate is unreadable ({_first_line(exc)})") from None
    return certificate


def _bundle_intermediates(bundle: Any) -> list[Certificate]:
    """Certificates after the leaf in a v0.1/v0.2 chain: they only help build a path."""
    from cryptography import x509

    chain = bundle.verification_material.x509_certificate_chain
    if chain is None:
        return []
    out = []
    for item in chain.certificates[1:]:
        try:
            out.append(x509.load_der_x509_certificate(item.raw_bytes))
        except ValueError:
            raise _Fail.malformed("a certificate of the bundle's chain is unreadable") from None
    return out


# --- log entries -----------------------------------------------------------------------------------


@dataclass
class _EntrySubject:
    """What a log entry's body must record."""

    signatures: list[bytes]
    key: PublicKey
    certificate: Certificate | None
    message_digest: bytes | None
    envelope: Any


@dataclass(frozen=True)
class _Log:
    key_id: bytes
    public_key: Any  # sigstore_models common PublicKey
    valid_from: datetime | None
    valid_until: datetime | None


def _logs(root: LoadedRoot) -> dict[bytes, _Log]:
    logs = {}
    for tlog in root.root._inner.tlogs:
        window = tlog.public_key.valid_for
        logs[bytes(tlog.log_id.key_id)] = _Log(
            bytes(tlog.log_id.key_id),
            tlog.public_key,
            _utc(window.start) if window is not None else None,
            _utc(window.end) if window is not None else None,
        )
    return logs


class _EntryView:
    """What sigstore-python's Merkle and checkpoint functions read: an object with `_inner`.
    (Its `TransparencyLogEntry` constructor refuses v0.1 entries without a checkpoint.)"""

    def __init__(self, inner: Any) -> None:
        self._inner = inner


def _promised_time(entry: Any) -> datetime | None:
    """The integrated time an entry's SET promises (verified with the entry), or None."""
    try:
        if entry.inclusion_promise is None or not entry.integrated_time:
            return None
        return datetime.fromtimestamp(int(entry.integrated_time), tz=UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        raise _Fail.log(
            f"log entry: integratedTime {str(entry.integrated_time)[:40]} is not a time"
        ) from None


def _verify_log_entry(
    number: int, entry: Any, root: LoadedRoot, subject: _EntrySubject, *, v01: bool
) -> RekorEntry:
    """Verify one log entry; its RekorEntry and its integrated time when a SET proves it."""
    from sigstore.errors import Error as SigstoreError

    name = f"log entry {number}"
    try:
        kind = entry.kind_version
        name = f"log entry {number} (index {int(entry.log_index)}, {kind.kind} {kind.version})"
        return _check_log_entry(name, entry, root, subject, v01=v01)
    except SignatureInvalid:
        raise
    except SigstoreError as exc:
        raise _Fail.log(f"{name}: {_first_line(exc)}") from None
    except Exception as exc:  # AttributeError, TypeError, ValueError … from a malformed entry
        raise _Fail.malformed(f"{name} is malformed ({type(exc).__name__}: {_first_line(exc)})") from None


def _check_log_entry(
    name: str, entry: Any, root: LoadedRoot, subject: _EntrySubject, *, v01: bool
) -> RekorEntry:
    from sigstore._internal.merkle import verify_merkle_inclusion
    from sigstore._internal.rekor.checkpoint import verify_checkpoint
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.errors import VerificationError

    key_id = bytes(entry.log_id.key_id)
    log = _logs(root).get(key_id)
    if log is None:
        raise _Fail.log(f"{name}: its log ({key_id.hex()[:16]}…) is not in {root.source}")
    keyring = root.root.rekor_keyring(KeyringPurpose.VERIFY)
    view = _EntryView(entry)
    proof = entry.inclusion_proof
    promise = entry.inclusion_promise
    integrated = int(entry.integrated_time or 0)
    if proof is not None and proof.checkpoint is not None:
        try:
            verify_merkle_inclusion(view)  # type: ignore[arg-type]
            verify_checkpoint(keyring, view)  # type: ignore[arg-type]
        except VerificationError as exc:
            raise _Fail.log(f"{name}: inclusion proof: {_first_line(exc)}") from None
    elif not v01:
        raise _Fail.malformed(f"{name}: no inclusion proof with a checkpoint")
    elif promise is None:
        raise _Fail.malformed(f"{name}: neither an inclusion proof nor a promise")
    if promise is not None and integrated:
        from sigstore.models import TransparencyLogEntry

        entry_object = TransparencyLogEntry.__new__(TransparencyLogEntry)
        entry_object._inner = entry
        try:
            entry_object._verify_set(keyring)
        except VerificationError as exc:
            raise _Fail.log(f"{name}: {_first_line(exc)}") from None
        moment = datetime.fromtimestamp(integrated, tz=UTC)
        if not _within(moment, log.valid_from, log.valid_until):
            raise _Fail.log(f"{name}: the log's key was not valid at {moment:%Y-%m-%dT%H:%M:%SZ}")
    _check_body(
        name, bytes(entry.canonicalized_body), entry.kind_version.kind, entry.kind_version.version, subject
    )
    return RekorEntry(key_id.hex(), int(entry.log_index), integrated, str(entry.kind_version.kind))


def _check_body(name: str, body_bytes: bytes, kind: str, version: str, subject: _EntrySubject) -> None:
    """The entry records this signature, this signer and this content (CVE-2022-36056)."""
    try:
        body = json.loads(body_bytes)
    except ValueError:
        raise _Fail.malformed(f"{name}: its body is not JSON") from None
    if not isinstance(body, dict) or body.get("kind") != kind or body.get("apiVersion") != version:
        raise _Fail.log(f"{name}: its body is of another kind than the entry says (inconsistent)")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise _Fail.malformed(f"{name}: its body has no spec")

    def inconsistent(what: str) -> SignatureInvalid:
        return _Fail.log(f"{name}: the log entry is inconsistent with the bundle ({what})")

    envelope = subject.envelope
    if kind == "hashedrekord" and version == "0.0.1":
        digest = bytes.fromhex(_dig(spec, "data", "hash", "value"))
        if _dig(spec, "data", "hash", "algorithm") != "sha256":
            raise inconsistent("hash algorithm")
        signature = _b64(_dig(spec, "signature", "content"))
        verifier = _b64(_dig(spec, "signature", "publicKey", "content"))
        _same_digest(digest, subject, inconsistent)
        if signature not in subject.signatures:
            raise inconsistent("signature")
        _same_signer_pem(verifier, subject, inconsistent)
    elif kind == "hashedrekord" and version == "0.0.2":
        inner = spec.get("hashedRekordV002", spec)
        if _dig(inner, "data", "algorithm") != "SHA2_256":
            raise inconsistent("hash algorithm")
        _same_digest(_b64(_dig(inner, "data", "digest")), subject, inconsistent)
        if _b64(_dig(inner, "signature", "content")) not in subject.signatures:
            raise inconsistent("signature")
        _same_signer_v2(_dig(inner, "signature", "verifier"), subject, inconsistent)
    elif kind == "dsse" and version == "0.0.1":
        if envelope is None:
            raise inconsistent("a DSSE entry for a message signature")
        if _dig(spec, "payloadHash", "algorithm") != "sha256":
            raise inconsistent("payload hash algorithm")
        if bytes.fromhex(_dig(spec, "payloadHash", "value")) != hashlib.sha256(envelope.payload).digest():
            raise inconsistent("payload hash")
        logged = spec.get("signatures")
        if not isinstance(logged, list) or not logged:
            raise inconsistent("no signatures")
        for item in logged:
            if _b64(_dig(item, "signature")) not in [s.sig for s in envelope.signatures]:
                raise inconsistent("signature")
            _same_signer_pem(_b64(_dig(item, "verifier")), subject, inconsistent)
    elif kind == "dsse" and version == "0.0.2":
        if envelope is None:
            raise inconsistent("a DSSE entry for a message signature")
        inner = spec.get("dsseV002", spec)
        if _dig(inner, "payloadHash", "algorithm") != "SHA2_256":
            raise inconsistent("payload hash algorithm")
        if _b64(_dig(inner, "payloadHash", "digest")) != hashlib.sha256(envelope.payload).digest():
            raise inconsistent("payload hash")
        logged = inner.get("signatures")
        if not isinstance(logged, list) or not logged:
            raise inconsistent("no signatures")
        for item in logged:
            if _b64(_dig(item, "content")) not in [s.sig for s in envelope.signatures]:
                raise inconsistent("signature")
            _same_signer_v2(_dig(item, "verifier"), subject, inconsistent)
    elif kind == "intoto" and version in ("0.0.1", "0.0.2"):
        if envelope is None:
            raise inconsistent("an in-toto entry for a message signature")
        content = spec.get("content")
        if not isinstance(content, dict):
            raise _Fail.malformed(f"{name}: in-toto entry without content")
        if _dig(content, "payloadHash", "algorithm") != "sha256":
            raise inconsistent("payload hash algorithm")
        if bytes.fromhex(_dig(content, "payloadHash", "value")) != hashlib.sha256(envelope.payload).digest():
            raise inconsistent("payload hash")
        if version == "0.0.1":
            _same_signer_pem(_b64(_dig(spec, "publicKey")), subject, inconsistent)
        else:
            logged = _dig(content, "envelope", "signatures")
            if not isinstance(logged, list) or not logged:
                raise inconsistent("no signatures")
            for item in logged:
                # Rekor stores these signatures base64-encoded twice (its own quirk)
                if _intoto_sig(_dig(item, "sig")) not in [s.sig for s in envelope.signatures]:
                    raise inconsistent("signature")
                _same_signer_pem(_b64(_dig(item, "publicKey")), subject, inconsistent)
    else:
        raise _Fail.log(f"{name}: log entries of kind {kind} {version} are not supported")


def _intoto_sig(value: str) -> bytes:
    once = _b64(value)
    try:
        return base64.b64decode(once, validate=True)
    except (binascii.Error, ValueError):
        return once


def _same_digest(
    digest: bytes, subject: _EntrySubject, inconsistent: Callable[[str], SignatureInvalid]
) -> None:
    if subject.message_digest is not None:
        expected = subject.message_digest
    else:  # DSSE logged as hashedrekord (Rekor v2): the digest of the PAE
        from trust.sigstore.bundles import pae

        expected = hashlib.sha256(pae(subject.envelope.payload_type, subject.envelope.payload)).digest()
    if digest != expected:
        raise inconsistent("digest")


def _same_signer_pem(
    pem: bytes, subject: _EntrySubject, inconsistent: Callable[[str], SignatureInvalid]
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if subject.certificate is not None:
        try:
            logged = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise inconsistent("the logged verifier is not the bundle's certificate") from None
        if logged != subject.certificate:
            raise inconsistent("the logged certificate is another")
        return
    try:
        logged_key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        try:
            logged_key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise inconsistent("the logged verifier is not a key") from None
    if _spki(logged_key) != _spki(subject.key):
        raise inconsistent("the logged key is another")


def _same_signer_v2(
    verifier: Any, subject: _EntrySubject, inconsistent: Callable[[str], SignatureInvalid]
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not isinstance(verifier, dict):
        raise inconsistent("no verifier")
    if subject.certificate is not None:
        raw = _b64(_dig(verifier, "x509Certificate", "rawBytes"))
        try:
            logged = x509.load_der_x509_certificate(raw)
        except ValueError:
            raise inconsistent("the logged certificate is unreadable") from None
        if logged != subject.certificate:
            raise inconsistent("the logged certificate is another")
        return
    raw = _b64(_dig(verifier, "publicKey", "rawBytes"))
    try:
        logged_key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError):
        raise inconsistent("the logged key is unreadable") from None
    if _spki(logged_key) != _spki(subject.key):
        raise inconsistent("the logged key is another")


# --- RFC 3161 timestamps ---------------------------------------------------------------------------


def verify_rfc3161(
    der: bytes, signature: bytes, root: LoadedRoot, name: str = "timestamp"
) -> datetime | None:
    """The genTime of a TimeStampResp over `signature`, signed by a timestamp authority of `root`
    whose validity includes genTime (both ends inclusive, as the trusted-root specification says;
    sigstore-python excludes the end). None when no authority of the root vouches for it.
    Raises `SignatureInvalid` (malformed) when it cannot be read."""
    from rfc3161_client import VerificationError as TimestampVerificationError
    from rfc3161_client import VerifierBuilder, decode_timestamp_response

    try:
        response = decode_timestamp_response(der)
        gen_time = _utc(response.tst_info.gen_time)
    except Exception as exc:  # rfc3161-client's ASN.1 errors
        raise _Fail.malformed(f"{name} is not a DER TimeStampResp ({_first_line(exc)})") from None
    assert gen_time is not None
    for authority in root.root.get_timestamp_authorities():
        certificates = authority.certificates(allow_expired=True)
        if len(certificates) < 2:
            continue
        builder = VerifierBuilder().tsa_certificate(certificates[0]).add_root_certificate(certificates[-1])
        for certificate in certificates[1:-1]:
            builder = builder.add_intermediate_certificate(certificate)
        try:
            builder.build().verify_message(response, signature)
        except (TimestampVerificationError, ValueError):
            continue
        if _within(gen_time, _utc(authority.validity_period_start), _utc(authority.validity_period_end)):
            return gen_time
    return None


# --- helpers ---------------------------------------------------------------------------------------


def _within(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or start <= moment) and (end is None or moment <= end)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _spki(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _verify_prehashed(key: PublicKey, digest: bytes | None, signature: bytes) -> bool:
    from trust.sigstore.bundles import verify_prehashed

    return digest is not None and verify_prehashed(key, digest, signature)


def _dig(doc: Any, *path: str) -> Any:
    """`doc[a][b]…`, or a malformed error naming the path."""
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            raise _Fail.malformed(f"log entry body lacks {'.'.join(path)}")
        doc = doc[part]
    return doc


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Fail.malformed("log entry body: a base64 field is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Fail.malformed("log entry body: a field is not base64") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]
