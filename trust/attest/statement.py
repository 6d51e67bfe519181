"""in-toto Statements: what an attestation says, about which digests, under which predicate type.

A Statement (https://github.com/in-toto/attestation, v1 and the older v0.1) is JSON:
`{"_type", "subject": [{"name", "digest": {alg: hex}}], "predicateType", "predicate"}`. It reaches
us base64-encoded inside a DSSE envelope whose `payloadType` is `application/vnd.in-toto+json`;
only the bytes the envelope's signature covers are ever parsed here.

`--type` takes cosign's short names for predicate types, or a URI as is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pull.digest import Digest
from pull.records import dataclass
from pull.strictjson import loads as strict_json

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_TYPES = frozenset({STATEMENT_V1, "https://in-toto.io/Statement/v0.1"})
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
"""What cosign v3 signs for a plain signature: a statement, but a signature, not an attestation."""
CUSTOM_PREDICATE = "https://cosign.sigstore.dev/attestation/v1"

PREDICATE_TYPES: dict[str, str] = {
    "slsaprovenance": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance02": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
    "openvex": "https://openvex.dev/ns",
    "link": "https://in-toto.io/Link/v1",
    "custom": CUSTOM_PREDICATE,
}
"""cosign's `--type` short names -> predicate type URIs (cosign's own table)."""

MAX_STATEMENT_BYTES = 32 * 1024 * 1024
"""An SBOM of a large image runs to megabytes; a statement larger than this is refused unread."""


class StatementError(ValueError):
    """The payload is not an in-toto statement we can read (the message says what is wrong)."""


def predicate_type_for(name: str) -> str:
    """The predicate type URI for a cosign short name or a URI. Raises `ValueError` for neither."""
    if name in PREDICATE_TYPES:
        return PREDICATE_TYPES[name]
    if "://" in name and not any(c.isspace() for c in name):
        return name
    raise ValueError(
        f"unknown predicate type {name[:80]!r}: use a URI or one of {', '.join(sorted(PREDICATE_TYPES))}"
    )


@dataclass(frozen=True)
class Subject:
    name: str
    digests: dict[str, str]
    """algorithm -> lower-case hex."""


@dataclass(frozen=True)
class Statement:
    """A parsed statement. `document` is the whole decoded JSON (what CEL conditions see)."""

    type: str
    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: Any
    document: dict[str, Any]

    def covers(self, digest: Digest) -> bool:
        """Whether `digest` is one of the subjects (the only link between a statement and an image)."""
        return any(s.digests.get(digest.algorithm) == digest.hex for s in self.subjects)

    def subject_for(self, digest: Digest | None) -> dict[str, Any]:
        """The subject entry naming `digest` as JSON (`{"name", "digest"}`; {} if none does); the
        first entry when `digest` is None."""
        for s in self.subjects:
            if digest is None or s.digests.get(digest.algorithm) == digest.hex:
                return {"name": s.name, "digest": s.digests}
        return {}

    def subject_text(self) -> str:
        return ", ".join(
            f"{s.name or '?'}@{alg}:{hex_[:12]}…" for s in self.subjects for alg, hex_ in s.digests.items()
        )


def parse_statement(payload_type: str, payload: bytes) -> Statement:
    """The statement in a verified DSSE payload. Raises `StatementError` naming the problem."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise StatementError(f"DSSE payload type {payload_type[:80]!r} is not an in-toto statement")
    if len(payload) > MAX_STATEMENT_BYTES:
        raise StatementError(f"the statement is larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        document = strict_json(payload, "the in-toto statement")
    except (ValueError, UnicodeDecodeError):
        raise StatementError("the in-toto statement is not valid JSON") from None
    if not isinstance(document, dict):
        raise StatementError("the in-toto statement is not a JSON object")
    kind = document.get("_type")
    if kind not in STATEMENT_TYPES:
        raise StatementError(f"not an in-toto statement (_type {str(kind)[:80]!r})")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise StatementError("the statement has no predicateType")
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise StatementError("the statement has no subject")
    subjects = []
    for raw in raw_subjects:
        digests = raw.get("digest") if isinstance(raw, dict) else None
        if not isinstance(digests, dict):
            raise StatementError("a subject of the statement has no digest")
        name = raw.get("name")
        subjects.append(
            Subject(
                name if isinstance(name, str) else "",
                {str(k): v.lower() for k, v in digests.items() if isinstance(v, str)},
            )
        )
    return Statement(str(kind), predicate_type, tuple(subjects), document.get("predicate"), document)


def build_statement(subject_name: str, digest: Digest, predicate_type: str, predicate: Any) -> bytes:
    """A v1 statement about one digest (compact JSON, as the DSSE payload)."""
    statement = {
        "_type": STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode()


def read_predicate(data: bytes, predicate_type: str) -> Any:
    """The predicate from a `--predicate` file's bytes, as cosign builds it.

    `custom` wraps the file's text with a timestamp (`{"Data", "Timestamp"}`); every other type
    takes the file as JSON (an SPDX tag-value document, not JSON, becomes a JSON string).
    Raises `ValueError` with a one-line reason.
    """
    if predicate_type == CUSTOM_PREDICATE:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the predicate file is not UTF-8 text") from None
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"Data": text, "Timestamp": now}
    try:
        return strict_json(data, "the predicate")
    except (ValueError, UnicodeDecodeError) as exc:
        if predicate_type == PREDICATE_TYPES["spdx"]:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        raise ValueError(f"the predicate file is not JSON ({str(exc)[:80]})") from None
