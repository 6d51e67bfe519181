"""Cosign signatures as containers/image stores them beside a `dir:` image (podman, skopeo, CRI-O).

A `dir:` image is a directory with `manifest.json` and `signature-1`, `signature-2`, … . A
signature file starts with a format marker; a cosign one is

    \\x00sigstore-json\\n{"mimeType": …, "payload": "<base64>", "annotations": {…}}

where mimeType is the layer media type, payload the simple-signing payload and annotations the
layer annotations cosign puts in a `.sig` manifest. This module turns those files into the same
`SignatureLayer`s a registry's `.sig` manifest yields and runs them through the same
`verify_simple_signing`; only the transport differs. Other signature formats (GPG simple signing)
are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pull.digest import Digest
from pull.errors import CouldNotCheck, IntegrityError, InvalidManifest
from pull.records import dataclass, field
from pull.reference import Reference
from pull.userfile import open_regular_file
from trust.cosign.simple_signing import SignatureLayer, SignatureOutcome, verify_simple_signing
from trust.keys.keyfiles import PublicKey, TrustedKey

SIGSTORE_JSON_PREFIX = b"\x00sigstore-json\n"
MAX_SIGNATURE_FILE_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_FILES = 1000
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SigstoreSignature:
    """One `sigstore-json` signature file: a simple-signing layer with its payload inline."""

    mime_type: str
    payload: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    def layer(self) -> SignatureLayer:
        return SignatureLayer(
            Digest.of_bytes(self.payload), len(self.payload), dict(self.annotations), self.mime_type
        )


def parse_signature_file(data: bytes) -> SigstoreSignature | None:
    """Parse one signature file; None if it is not in the sigstore-json format.

    Raises `InvalidManifest` if it claims to be sigstore-json but is malformed.
    """
    if not data.startswith(SIGSTORE_JSON_PREFIX):
        return None
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise InvalidManifest(f"sigstore signature larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    try:
        doc = json.loads(data[len(SIGSTORE_JSON_PREFIX) :].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidManifest("sigstore signature is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"mimeType", "payload", "annotations"}:
        raise InvalidManifest("sigstore signature must have exactly mimeType, payload and annotations")
    mime_type, payload_b64, annotations = doc["mimeType"], doc["payload"], doc["annotations"]
    if not isinstance(mime_type, str) or not isinstance(payload_b64, str):
        raise InvalidManifest("sigstore signature mimeType and payload must be strings")
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidManifest("sigstore signature annotations must map strings to strings")
    try:
        payload = base64.b64decode(payload_b64, validate=True)
    except binascii.Error:
        raise InvalidManifest("sigstore signature payload is not base64") from None
    return SigstoreSignature(mime_type, payload, annotations)


def read_signatures(directory: Path) -> list[SigstoreSignature]:
    """The sigstore-json signatures of a `dir:` image (`signature-1` … up to the first gap)."""
    signatures = []
    for number in range(1, MAX_SIGNATURE_FILES + 1):
        path = directory / f"signature-{number}"
        try:
            with open_regular_file(path) as handle:
                data = handle.read(MAX_SIGNATURE_FILE_BYTES + 1)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise CouldNotCheck(f"cannot read {path}: {exc.strerror or exc}") from None
        parsed = parse_signature_file(data)
        if parsed is not None:
            signatures.append(parsed)
    return signatures


def read_manifest(directory: Path) -> bytes:
    path = directory / "manifest.json"
    try:
        with open_regular_file(path) as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise CouldNotCheck(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidManifest(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def verify_dir_image(
    directory: Path,
    expected_repository: str | Reference,
    trusted_keys: Sequence[TrustedKey],
    *,
    rekor_keys: Sequence[PublicKey] | None = None,
    ignore_reference: bool = False,
) -> tuple[Digest, list[SignatureOutcome]]:
    """Verify the cosign signatures of a `dir:` image against the digest of its `manifest.json`."""
    digest = Digest.of_bytes(read_manifest(directory))
    signatures = read_signatures(directory)
    payloads = {signature.layer().digest: signature.payload for signature in signatures}

    def load(layer: SignatureLayer) -> bytes:
        try:
            return payloads[layer.digest]
        except KeyError:
            raise IntegrityError(f"no payload with digest {layer.digest}") from None

    outcomes = verify_simple_signing(
        [signature.layer() for signature in signatures],
        load,
        digest,
        expected_repository,
        trusted_keys,
        rekor_keys,
        ignore_reference,
    )
    return digest, outcomes
