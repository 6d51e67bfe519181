"""A transparency log made in the tests (`MadeLog`): an RFC 6962 Merkle tree, signed checkpoints (C2SP signed
notes) and Rekor v1 signed entry timestamps, under a key the test holds.

The vectors hold only what real logs happened to write. With this log a test builds the entry
shapes they lack (Rekor v2 `hashedrekord` 0.0.2 over a message or a DSSE envelope, Rekor v1 `intoto`
0.0.2 with a SET), proves them included in a tree of several leaves, and breaks one thing at a time
for the negative twins. The facts used: RFC 6962 section 2.1 (leaf hash `SHA-256(0x00 || leaf)`,
node hash `SHA-256(0x01 || left || right)`, audit paths), the signed-note text format (the note,
a blank line, then `— NAME base64(4-byte key hint || signature)` lines; a cosigned checkpoint has
more than one such line), and Rekor's SET (a signature over the RFC 8785 JSON of
`{body, integratedTime, logID, logIndex}`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

LogKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def spki(key: LogKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    public = (
        key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) else key
    )
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key: LogKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data)


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_hash(leaves: list[bytes]) -> bytes:
    """RFC 6962's MTH of leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    split = _split(len(leaves))
    return node_hash(tree_hash(leaves[:split]), tree_hash(leaves[split:]))


def audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962's PATH(index, leaves): the sibling hashes from the leaf up to the root."""
    if len(leaves) == 1:
        return []
    split = _split(len(leaves))
    if index < split:
        return [*audit_path(index, leaves[:split]), tree_hash(leaves[split:])]
    return [*audit_path(index - split, leaves[split:]), tree_hash(leaves[:split])]


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (> 1)."""
    split = 1
    while split * 2 < size:
        split *= 2
    return split


@dataclass
class MadeLog:
    """A log of `filler` unrelated leaves plus whatever the test appends, signed by `key`."""

    key: LogKey
    origin: str = "log.test/v2"
    leaves: list[bytes] = field(default_factory=list)

    @property
    def log_id(self) -> bytes:
        """The log's key id as a trusted root names it (SHA-256 of the key's DER SPKI)."""
        return hashlib.sha256(spki(self.key)).digest()

    def append(self, body: bytes) -> int:
        self.leaves.append(leaf_hash(body))
        return len(self.leaves) - 1

    def fill(self, count: int) -> None:
        for number in range(count):
            self.append(f"another entry {number}".encode())

    def root(self) -> bytes:
        return tree_hash(self.leaves)

    def checkpoint(self, *, root: bytes | None = None, cosigners: tuple[LogKey, ...] = ()) -> str:
        """The signed note of the current tree (or of `root`): the log's signature line first,
        then one per witness in `cosigners` (their hints are their own key ids)."""
        note = f"{self.origin}\n{len(self.leaves)}\n{b64(root or self.root())}\n"
        lines = [f"\u2014 {self.origin} {b64(self.log_id[:4] + sign(self.key, note.encode()))}\n"]
        for number, witness in enumerate(cosigners):
            hint = hashlib.sha256(spki(witness)).digest()[:4]
            lines.append(f"\u2014 witness{number}.test {b64(hint + sign(witness, note.encode()))}\n")
        return note + "\n" + "".join(lines)

    def proof(self, index: int, *, checkpoint: str | None = None) -> dict[str, Any]:
        """A bundle's `inclusionProof` for the leaf at `index` in the current tree."""
        return {
            "logIndex": str(index),
            "rootHash": b64(self.root()),
            "treeSize": str(len(self.leaves)),
            "hashes": [b64(h) for h in audit_path(index, self.leaves)],
            "checkpoint": {"envelope": checkpoint if checkpoint is not None else self.checkpoint()},
        }

    def signed_entry_timestamp(self, body: bytes, index: int, integrated_time: int) -> bytes:
        """Rekor v1's SET over the entry."""
        payload = {
            "body": b64(body),
            "integratedTime": integrated_time,
            "logID": self.log_id.hex(),
            "logIndex": index,
        }
        return sign(self.key, rfc8785.dumps(payload))

    def trusted_log(self, *, start: str = "2020-01-01T00:00:00Z") -> dict[str, Any]:
        """This log as a trusted root's `tlogs[]` entry."""
        details = (
            "PKIX_ECDSA_P256_SHA_256" if isinstance(self.key, ec.EllipticCurvePrivateKey) else "PKIX_ED25519"
        )
        return {
            "baseUrl": f"https://{self.origin}",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(spki(self.key)),
                "keyDetails": details,
                "validFor": {"start": start},
            },
            "logId": {"keyId": b64(self.log_id)},
        }


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
