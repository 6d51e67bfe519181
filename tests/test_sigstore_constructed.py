"""Log entries the vectors lack, built here under a test log key, each next to its negative twin:
Rekor v2 `hashedrekord` 0.0.2 entries (over a message, and over a DSSE envelope's PAE) proved in a
tree of several leaves under a signed checkpoint (ECDSA and Ed25519 logs; a checkpoint cosigned by
a witness), and a Rekor v1 `intoto` 0.0.2 entry with its SET. Every bundle goes through `trust
verify-blob --key … --trusted-root …`, as a user would check one; a timestamp from the local TSA
(`sigstore_mock`) gives the Rekor v2 bundles their time.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from support.made_log import LogKey, MadeLog, b64, spki
from support.sigstore_mock import SigstoreMock

from trust.cli.app import main
from trust.sigstore.bundles import pae
from trust.sigstore.services import request_timestamp

IN_TOTO = "application/vnd.in-toto+json"
BUNDLE_V3 = "application/vnd.dev.sigstore.bundle.v0.3+json"


@dataclass
class Signed:
    """A file, its signer's key and a bundle about it, ready to be broken one field at a time."""

    folder: Path
    artifact: Path
    public_key: Path
    bundle: dict[str, Any]
    root: dict[str, Any]

    def verify(self, bundle: dict[str, Any] | None = None, root: dict[str, Any] | None = None) -> int:
        """`trust verify-blob` of the artifact with this bundle and root (or the ones given)."""
        bundle_path, root_path = self.folder / "case.sigstore.json", self.folder / "case-root.json"
        bundle_path.write_text(json.dumps(bundle or self.bundle))
        root_path.write_text(json.dumps(root or self.root))
        return main(
            [
                "verify-blob",
                str(self.artifact),
                "--bundle",
                str(bundle_path),
                "--key",
                str(self.public_key),
                "--trusted-root",
                str(root_path),
            ]
        )

    def changed(self, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self.bundle))
        edit(copy)
        return copy


def _signer(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "signer.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


def _root(mock: SigstoreMock, *logs: MadeLog) -> dict[str, Any]:
    """The mock's trusted root (for its timestamp authority), listing `logs` as its only logs."""
    root: dict[str, Any] = json.loads(mock.trusted_root.read_text())
    root["tlogs"] = [log.trusted_log() for log in logs]
    return root


def _v2_entry(log: MadeLog, body: dict[str, Any], filler_after: int = 2) -> dict[str, Any]:
    """`body` logged in `log` (after 3 unrelated leaves, before `filler_after` more): a Rekor v2 entry."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    log.fill(3)
    index = log.append(raw)
    log.fill(filler_after)
    return {
        "logIndex": str(index),
        "logId": {"keyId": b64(log.log_id)},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
        "inclusionProof": log.proof(index),
        "canonicalizedBody": b64(raw),
    }


def _hashedrekord_v2(digest: bytes, signature: bytes, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {
            "hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": b64(digest)},
                "signature": {
                    "content": b64(signature),
                    "verifier": {
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "publicKey": {"rawBytes": b64(spki(key.public_key()))},
                    },
                },
            }
        },
    }


def _timestamped(mock: SigstoreMock, signature: bytes) -> dict[str, Any]:
    return {"rfc3161Timestamps": [{"signedTimestamp": b64(request_timestamp(mock.tsa_url, signature))}]}


def _message_case(mock: SigstoreMock, folder: Path, log: MadeLog) -> Signed:
    """A file signed with a key, logged as hashedrekord 0.0.2 in `log`, timestamped."""
    key, public = _signer(folder)
    artifact = folder / "release.tar"
    artifact.write_bytes(b"a release made for a constructed log entry")
    digest = hashlib.sha256(artifact.read_bytes()).digest()
    signature = key.sign(artifact.read_bytes(), ec.ECDSA(hashes.SHA256()))
    bundle = {
        "mediaType": BUNDLE_V3,
        "verificationMaterial": {
            "publicKey": {"hint": b64(hashlib.sha256(spki(key.public_key())).digest())},
            "tlogEntries": [_v2_entry(log, _hashedrekord_v2(digest, signature, key))],
            "timestampVerificationData": _timestamped(mock, signature),
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)},
            "signature": b64(signature),
        },
    }
    return Signed(folder, artifact, public, bundle, _root(mock, log))


def _statement_about(artifact: Path) -> bytes:
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": artifact.name, "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://example.test/build"}},
    }
    return json.dumps(statement, separators=(",", ":")).encode()


def _dsse_case(mock: SigstoreMock, folder: Path, log: MadeLog) -> Signed:
    """An in-toto statement about a file, signed with a key in a DSSE envelope, logged in Rekor v2
    as hashedrekord 0.0.2 over the PAE (as sigstore-go and trust write it), timestamped."""
    key, public = _signer(folder)
    artifact = folder / "release.whl"
    artifact.write_bytes(b"a wheel whose provenance is attested")
    payload = _statement_about(artifact)
    signed = pae(IN_TOTO, payload)
    signature = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    entry = _v2_entry(log, _hashedrekord_v2(hashlib.sha256(signed).digest(), signature, key))
    bundle = {
        "mediaType": BUNDLE_V3,
        "verificationMaterial": {
            "publicKey": {"hint": b64(hashlib.sha256(spki(key.public_key())).digest())},
            "tlogEntries": [entry],
            "timestampVerificationData": _timestamped(mock, signature),
        },
        "dsseEnvelope": {
            "payload": b64(payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": b64(signature)}],
        },
    }
    return Signed(folder, artifact, public, bundle, _root(mock, log))


def _proof(bundle: dict[str, Any]) -> dict[str, Any]:
    proof: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    return proof


def _flip_last_bit(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 1
    return b64(bytes(raw))


def _relogged(log: MadeLog, bundle: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The bundle with its entry's body changed by `edit` and that body logged properly (a new leaf,
    its proof, checkpoint and SET): only the check of the body against the bundle can refuse it."""
    copy: dict[str, Any] = json.loads(json.dumps(bundle))
    entry = copy["verificationMaterial"]["tlogEntries"][0]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    edit(body)
    raw = json.dumps(body, separators=(",", ":")).encode()
    index = log.append(raw)
    entry["logIndex"] = str(index)
    entry["canonicalizedBody"] = b64(raw)
    entry["inclusionProof"] = log.proof(index)
    if "inclusionPromise" in entry:
        promise = log.signed_entry_timestamp(raw, index, int(entry["integratedTime"]))
        entry["inclusionPromise"] = {"signedEntryTimestamp": b64(promise)}
    return copy


# --- Rekor v2: hashedrekord 0.0.2, inclusion proofs, checkpoints ----------------------------------


@pytest.mark.parametrize("log_key", ["ecdsa-p256", "ed25519"])
def test_a_rekor_v2_message_entry_and_its_twins(
    sigstore_mock: SigstoreMock, tmp_path: Path, log_key: str
) -> None:
    key: LogKey = (
        ec.generate_private_key(ec.SECP256R1())
        if log_key == "ecdsa-p256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    log = MadeLog(key)
    case = _message_case(sigstore_mock, tmp_path, log)
    assert case.verify() == 0

    def wrong_root_hash(bundle: dict[str, Any]) -> None:
        _proof(bundle)["rootHash"] = b64(hashlib.sha256(b"another tree").digest())

    def wrong_path(bundle: dict[str, Any]) -> None:
        hashes_ = _proof(bundle)["hashes"]
        hashes_[0] = b64(hashlib.sha256(b"another sibling").digest())

    def broken_checkpoint(bundle: dict[str, Any]) -> None:
        text, line = _proof(bundle)["checkpoint"]["envelope"].rstrip("\n").rsplit("\n", 1)
        dash, name, signature = line.split(" ")
        _proof(bundle)["checkpoint"]["envelope"] = f"{text}\n{dash} {name} {_flip_last_bit(signature)}\n"

    def checkpoint_by_another_key(bundle: dict[str, Any]) -> None:
        impostor = MadeLog(
            ec.generate_private_key(ec.SECP256R1()), origin=log.origin, leaves=list(log.leaves)
        )
        text = impostor.checkpoint()
        # the impostor's signature under the real log's key hint: only the signature can tell
        note, line = text.rstrip("\n").rsplit("\n", 1)
        dash, name, signature = line.split(" ")
        raw = base64.b64decode(signature)
        _proof(bundle)["checkpoint"]["envelope"] = f"{note}\n{dash} {name} {b64(log.log_id[:4] + raw[4:])}\n"

    def index_beyond_the_tree(bundle: dict[str, Any]) -> None:
        _proof(bundle)["logIndex"] = str(len(log.leaves) + 3)
        bundle["verificationMaterial"]["tlogEntries"][0]["logIndex"] = str(len(log.leaves) + 3)

    for twin in (
        wrong_root_hash,
        wrong_path,
        broken_checkpoint,
        checkpoint_by_another_key,
        index_beyond_the_tree,
    ):
        assert case.verify(case.changed(twin)) == 3, twin.__name__

    # well logged, but the entry records something else than this bundle holds
    def another_artifact(body: dict[str, Any]) -> None:
        body["spec"]["hashedRekordV002"]["data"]["digest"] = b64(hashlib.sha256(b"other").digest())

    def another_signature(body: dict[str, Any]) -> None:
        body["spec"]["hashedRekordV002"]["signature"]["content"] = b64(b"0" * 70)

    def another_key(body: dict[str, Any]) -> None:
        stranger = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
        body["spec"]["hashedRekordV002"]["signature"]["verifier"]["publicKey"]["rawBytes"] = b64(stranger)

    for edit in (another_artifact, another_signature, another_key):
        assert case.verify(_relogged(log, case.bundle, edit)) == 3, edit.__name__
    assert case.verify(_relogged(log, case.bundle, lambda body: None)) == 0  # the twins' control
    # a root that lists another log with the same origin: the entry's log is unknown. (Written to
    # the same path as the root before it, in the same process: a root changed on disk is read again.)
    other = MadeLog(ec.generate_private_key(ec.SECP256R1()), origin=log.origin)
    assert case.verify(root=_root(sigstore_mock, other)) == 3


def test_a_cosigned_checkpoint_is_accepted_only_with_the_log_signature(
    sigstore_mock: SigstoreMock, tmp_path: Path
) -> None:
    log = MadeLog(ec.generate_private_key(ec.SECP256R1()))
    case = _message_case(sigstore_mock, tmp_path, log)
    witness = ec.generate_private_key(ec.SECP256R1())

    def cosigned(bundle: dict[str, Any]) -> None:
        _proof(bundle)["checkpoint"]["envelope"] = log.checkpoint(cosigners=(witness,))

    assert case.verify(case.changed(cosigned)) == 0

    def witness_only(bundle: dict[str, Any]) -> None:
        # the log's own line is broken; the witness's is valid but is not the log's key
        text = log.checkpoint(cosigners=(witness,))
        note, signatures = text.split("\n\n")
        own, witnessed = signatures.rstrip("\n").split("\n")
        dash, name, signature = own.split(" ")
        broken = f"{dash} {name} {_flip_last_bit(signature)}"
        _proof(bundle)["checkpoint"]["envelope"] = f"{note}\n\n{broken}\n{witnessed}\n"

    assert case.verify(case.changed(witness_only)) == 3

    def witness_without_log(bundle: dict[str, Any]) -> None:
        text = log.checkpoint(cosigners=(witness,))
        note, signatures = text.split("\n\n")
        witnessed = signatures.rstrip("\n").split("\n")[1]
        _proof(bundle)["checkpoint"]["envelope"] = f"{note}\n\n{witnessed}\n"

    assert case.verify(case.changed(witness_without_log)) == 3


def test_a_rekor_v2_dsse_entry_over_the_pae_and_its_twins(
    sigstore_mock: SigstoreMock, tmp_path: Path
) -> None:
    log = MadeLog(ec.generate_private_key(ec.SECP256R1()))
    case = _dsse_case(sigstore_mock, tmp_path, log)
    assert case.verify() == 0  # the file is a subject of the statement

    def digest_of_the_payload_not_the_pae(body: dict[str, Any]) -> None:
        payload = base64.b64decode(case.bundle["dsseEnvelope"]["payload"])
        body["spec"]["hashedRekordV002"]["data"]["digest"] = b64(hashlib.sha256(payload).digest())

    def another_statement(bundle: dict[str, Any]) -> None:
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        payload["predicate"]["buildDefinition"]["buildType"] = "https://example.test/other"
        bundle["dsseEnvelope"]["payload"] = b64(json.dumps(payload, separators=(",", ":")).encode())

    assert case.verify(_relogged(log, case.bundle, digest_of_the_payload_not_the_pae)) == 3
    assert case.verify(case.changed(another_statement)) == 3
    other = tmp_path / "other.whl"
    other.write_bytes(b"not the attested wheel")
    assert Signed(tmp_path, other, case.public_key, case.bundle, case.root).verify() == 3


# --- Rekor v1: intoto 0.0.2 with a SET ---------------------------------------------------------------


def _intoto_case(mock: SigstoreMock, folder: Path, log: MadeLog) -> Signed:
    """A DSSE bundle (v0.3) logged in Rekor v1 as `intoto` 0.0.2: inclusion proof, checkpoint and
    SET; the entry keeps the signature base64-encoded twice, as Rekor does."""
    key, public = _signer(folder)
    artifact = folder / "release.whl"
    artifact.write_bytes(b"a wheel attested through a Rekor v1 in-toto entry")
    payload = _statement_about(artifact)
    signature = key.sign(pae(IN_TOTO, payload), ec.ECDSA(hashes.SHA256()))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    envelope = {"payloadType": IN_TOTO, "payload": b64(payload), "signatures": [{"sig": b64(signature)}]}
    body = {
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {
            "content": {
                "envelope": {
                    "payloadType": IN_TOTO,
                    "signatures": [{"sig": b64(b64(signature).encode()), "publicKey": b64(pem)}],
                },
                "hash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                },
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            }
        },
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    log.fill(4)
    index = log.append(raw)
    log.fill(1)
    integrated = 1_760_000_000
    entry = {
        "logIndex": str(index),
        "logId": {"keyId": b64(log.log_id)},
        "kindVersion": {"kind": "intoto", "version": "0.0.2"},
        "integratedTime": str(integrated),
        "inclusionPromise": {"signedEntryTimestamp": b64(log.signed_entry_timestamp(raw, index, integrated))},
        "inclusionProof": log.proof(index),
        "canonicalizedBody": b64(raw),
    }
    bundle = {
        "mediaType": BUNDLE_V3,
        "verificationMaterial": {
            "publicKey": {"hint": b64(hashlib.sha256(spki(key.public_key())).digest())},
            "tlogEntries": [entry],
        },
        "dsseEnvelope": envelope,
    }
    return Signed(folder, artifact, public, bundle, _root(mock, log))


def test_an_intoto_0_0_2_entry_with_a_set_and_its_twins(sigstore_mock: SigstoreMock, tmp_path: Path) -> None:
    log = MadeLog(ec.generate_private_key(ec.SECP256R1()), origin="rekor.log.test")
    case = _intoto_case(sigstore_mock, tmp_path, log)
    assert case.verify() == 0

    def set_by_another_key(bundle: dict[str, Any]) -> None:
        entry = bundle["verificationMaterial"]["tlogEntries"][0]
        impostor = MadeLog(ec.generate_private_key(ec.SECP256R1()), leaves=list(log.leaves))
        impostor_set = impostor.signed_entry_timestamp(
            base64.b64decode(entry["canonicalizedBody"]), int(entry["logIndex"]), int(entry["integratedTime"])
        )
        entry["inclusionPromise"]["signedEntryTimestamp"] = b64(impostor_set)

    assert case.verify(case.changed(set_by_another_key)) == 3

    def payload_hash_of_another_statement(body: dict[str, Any]) -> None:
        body["spec"]["content"]["payloadHash"]["value"] = hashlib.sha256(b"another statement").hexdigest()

    def signature_of_another_envelope(body: dict[str, Any]) -> None:
        body["spec"]["content"]["envelope"]["signatures"][0]["sig"] = b64(b64(b"0" * 70).encode())

    for edit in (payload_hash_of_another_statement, signature_of_another_envelope):
        assert case.verify(_relogged(log, case.bundle, edit)) == 3, edit.__name__
    assert case.verify(_relogged(log, case.bundle, lambda body: None)) == 0  # the twins' control
