"""Reusing an admission decision: a warm `trust run` that skips the registry when nothing changed.

An admission (policy/admission.py) is a function of a few inputs: the policy file, the files it
names (public keys, Notation trust stores, Sigstore trusted roots), trust's own code, the image's
manifest and config, the signature bytes the registry returns for its digest, and, for signatures
that expire, the clock. When the policy says `reuse-decisions: 10m`, a passing decision is written
to `STORE/meta/admitted/<key>.json` with a digest of every input that is on this host: of the bytes
the loader read (`Policy.inputs`), and of the public-good Sigstore root as it was before
verification read it, so an input replaced during an admission can only end reuse. Paths are kept as
the policy names them, symlinks included. Within that window, `trust run` and `trust create` look
the record up first (`recall`) and reuse it when every one of those digests still matches: no
registry round trip, no signature verification, no YAML or cryptography import.

What a reused decision does not see is the registry: a signature deleted from the registry (or a
new one) after the decision counts only when the record expires. That is the whole trade, and why
the window is the policy author's choice, capped at a day, and off by default. Signatures are not
revoked by deletion in cosign's model (anyone holding one can attach it again), and keys are
revoked by changing the policy or the key files, which ends reuse at once. Decisions that rest on a
Notation signature are never recorded: Notation signatures and certificates expire, so their
verdict depends on the clock. Everything else about the run is unchanged: the manifest and config
are re-read from the store and re-hashed, layers come from the same verified snapshots, and the
reuse is logged in `meta/decisions.jsonl` with the time of the decision it reuses.

Any doubt (a missing or unreadable record, other code (`code_fingerprint`), a changed input, a blob no
longer in the store, an index that would select another manifest, a decision time ahead of the
clock) means no reuse: the caller admits from scratch, which writes a new record.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy.admitted import AdmittedImage, Decision, ImageLimits
from pull.config import MANIFEST_MAX_BYTES
from pull.digest import Digest
from pull.durable import atomic_write
from pull.errors import TrustError
from pull.manifest import ImageIndex, ImageManifest, Platform, parse_config, verify_document
from pull.records import asdict
from trust import __version__

if TYPE_CHECKING:
    from policy.evaluate import Evaluation
    from policy.model import Policy
    from pull.reference import Reference
    from pull.store import ContentStore

RECORDS_DIR = "admitted"
"""Under the store's `meta/`: one record per (repository@digest, platform)."""
RECORD_FORMAT = 2  # 2: the rule's image limits are recorded too
MAX_REUSE_SECONDS = 24 * 3600
"""`reuse-decisions` is at most a day (the loader refuses more; `recall` never reuses longer)."""
MAX_INPUT_BYTES = 16 * 1024 * 1024
"""An input file over this size (none should be) is not fingerprinted, so nothing is reused."""
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_ABSENT = "absent"
_CLOCK_SKEW = timedelta(minutes=1)
_VERIFIERS = frozenset({"cryptography", "sigstore", "securesystemslib", "rfc8785", "pynacl"})
"""Distributions whose code takes part in verifying signatures (their versions are an input)."""


def inputs_before_deciding(policy: Policy) -> list[tuple[str, str | None]] | None:
    """What a decision about to be made under `policy` depends on, for `remember`; None when the
    policy does not allow reuse.

    Taken before the decision: the loader hashed the bytes it read (policy, keys, trust stores,
    trusted roots), and the public-good Sigstore root, which verification reads later, is hashed
    here. An input replaced meanwhile can then only make the record fail to match, never vouch for
    bytes the decision was not made with.
    """
    if policy.reuse_seconds <= 0 or policy.source_path is None:
        return None
    inputs = [(str(path), digest) for path, digest in policy.inputs]
    from policy.model import KeylessAuthority

    if any(
        isinstance(authority, KeylessAuthority) and authority.trusted_root is None
        for authority in policy.authorities.values()
    ):
        from trust.sigstore import public_good_sources

        inputs.extend((str(path), fingerprint(path)) for path in public_good_sources())
    return inputs


def remember(
    store: ContentStore,
    reference: Reference,
    platform: Platform | None,
    policy: Policy,
    evaluation: Evaluation,
    image: AdmittedImage,
    inputs: list[tuple[str, str | None]],
    *,
    now: datetime | None = None,
) -> None:
    """Record a passing decision for reuse, if it may be reused (see the module doc). `inputs`
    come from `inputs_before_deciding`. Never fails the admission: an unwritable record is skipped."""
    if (
        policy.reuse_seconds <= 0
        or policy.source_path is None
        or reference.digest is None
        or not evaluation.passed
        or any(result.kind == "notation" and result.satisfied for result in evaluation.authorities)
        or any(digest is None for _, digest in inputs)
    ):
        return
    moment = now or datetime.now(UTC)
    record = {
        "format": RECORD_FORMAT,
        "trust": __version__,
        "code": code_fingerprint(),
        "reference": _key_text(reference, platform),
        "policy": str(policy.source_path.absolute()),
        "decidedAt": moment.isoformat(timespec="seconds"),
        "reuseUntil": (moment + timedelta(seconds=policy.reuse_seconds)).isoformat(timespec="seconds"),
        "inputs": [[name, digest] for name, digest in inputs],
        "manifest": str(image.manifest_digest),
        "index": str(image.index_digest) if image.index_digest else None,
        "config": str(image.config_digest),
        "decision": asdict(image.decision),
        "limits": asdict(image.limits),
        "evaluation": evaluation.to_json(),
    }
    path = _record_path(store, reference, platform)
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps(record, sort_keys=True).encode(), mode=0o600)


def recall(
    store: ContentStore,
    reference: Reference,
    platform: Platform | None,
    policy_path: Path,
    *,
    now: datetime | None = None,
) -> AdmittedImage | None:
    """The image a still-valid recorded decision admitted, or None (admit from scratch).

    A reuse is appended to the decision log, marked with the time of the decision it reuses.
    """
    if reference.digest is None:
        return None
    moment = now or datetime.now(UTC)
    path = _record_path(store, reference, platform)
    try:
        record = json.loads(path.read_bytes())
        image = _reusable(record, store, reference, platform, policy_path, moment)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, TrustError):
        return None  # unreadable, or not what it claims: admit from scratch (it is rewritten)
    if image is not None:
        evaluation = record["evaluation"]
        store.append_record(
            "decisions",
            {
                **evaluation,
                "time": moment.isoformat(timespec="seconds"),
                "policy": record["policy"],
                "reference": str(reference),
                "reused": record["decidedAt"],
            },
        )
    return image


def code_fingerprint(packages: Path | None = None) -> str:
    """The code that made a decision: trust's own modules (name, size, modification time; in
    `packages`, by default where this one is installed) and the installed versions of the
    libraries that verify signatures. An upgrade of either, or an edit of a checkout, ends reuse,
    though trust's version string is the same."""
    return _fingerprint_code(packages) if packages else _this_code()


@functools.cache
def _this_code() -> str:
    """About 2 ms, so once per process: `trust agent` computes it as it starts, which names the
    code its forks run (what it imported then), not what an upgrade has since put on disk."""
    return _fingerprint_code(Path(__file__).resolve().parents[1])


def _fingerprint_code(packages: Path) -> str:
    code = hashlib.sha256()
    folders = ["trust", "pull", "policy", "run"]
    while folders:  # every module, subpackages too (trust/sigstore/ verifies as much as policy/)
        folder = folders.pop(0)
        with os.scandir(packages / folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    folders.append(f"{folder}/{entry.name}")
                elif entry.name.endswith((".py", ".txt", ".json")):
                    info = entry.stat()
                    code.update(f"{folder}/{entry.name} {info.st_size} {info.st_mtime_ns}\n".encode())
    for folder in sys.path:
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(folder or ".")):
                if name.endswith(".dist-info") and name.split("-", 1)[0].lower() in _VERIFIERS:
                    code.update(f"{name}\n".encode())
    return f"sha256:{code.hexdigest()}"


def digest_bytes(data: bytes) -> str:
    """How an input's bytes are fingerprinted."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def fingerprint(path: Path) -> str | None:
    """An input as it is now: a file's `digest_bytes`, a folder's `folder_fingerprint`, "absent"
    when nothing is there; None when it cannot be vouched for (not a regular file, unreadable,
    over `MAX_INPUT_BYTES`)."""
    try:
        if path.is_dir():
            return folder_fingerprint(path, {})
        return file_fingerprint(path)
    except FileNotFoundError:
        return _ABSENT
    except OSError:
        return None


def file_fingerprint(path: Path) -> str | None:
    """`digest_bytes` of a regular file (None for anything else: a pipe read now is not the pipe
    read later). Opened without blocking, so a FIFO put in a key's place cannot hang a run.

    Raises:
        FileNotFoundError: there is no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = file.read(MAX_INPUT_BYTES + 1)
    return digest_bytes(data) if len(data) <= MAX_INPUT_BYTES else None


def folder_fingerprint(folder: Path, already_read: dict[str, str | None]) -> str | None:
    """A digest of the names and contents of a folder's files, one level deep, as a Notation trust
    store is read. `already_read` gives the digests of files the caller read itself (the loader's
    certificates: those bytes, not a second read, are what the decision used)."""
    listing = hashlib.sha256()
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        digest = already_read[entry.name] if entry.name in already_read else file_fingerprint(entry)
        if digest is None:
            return None
        listing.update(f"{entry.name}\0{digest}\n".encode(errors="surrogateescape"))
    return f"dir:sha256:{listing.hexdigest()}"


def _reusable(
    record: dict[str, Any],
    store: ContentStore,
    reference: Reference,
    platform: Platform | None,
    policy_path: Path,
    now: datetime,
) -> AdmittedImage | None:
    decided = datetime.fromisoformat(record["decidedAt"])
    if (
        record["format"] != RECORD_FORMAT
        or record["trust"] != __version__
        or record["code"] != code_fingerprint()
        or record["reference"] != _key_text(reference, platform)
        or record["policy"] != str(policy_path.absolute())
        or not decided - _CLOCK_SKEW <= now < _reuse_until(record)  # a clock set back ends reuse too
    ):
        return None
    for name, expected in record["inputs"]:
        if fingerprint(Path(name)) != expected:
            return None
    manifest_digest = Digest.parse(record["manifest"])
    if str(reference.digest) not in (record["manifest"], record["index"]):
        return None  # a record edited to stand for another image
    manifest = verify_document(
        store.read_blob(manifest_digest, MANIFEST_MAX_BYTES), content_type=None, expected=manifest_digest
    ).document
    if not isinstance(manifest, ImageManifest) or str(manifest.config.digest) != record["config"]:
        return None
    index_digest = Digest.parse(record["index"]) if record["index"] else None
    if index_digest is not None:
        index = verify_document(
            store.read_blob(index_digest, MANIFEST_MAX_BYTES), content_type=None, expected=index_digest
        ).document
        if (
            not isinstance(index, ImageIndex)
            or index.select(platform or Platform.host()).digest != manifest_digest
        ):
            return None  # the index would not choose this manifest: not what was admitted
    if not all(store.has(layer.digest) for layer in manifest.layers):
        return None  # removed (rmi, gc) since: admit again, which pulls them
    config = parse_config(store.read_blob(manifest.config.digest, MAX_CONFIG_BYTES), manifest.config)
    decided = record["decision"]
    decision = Decision(
        rule=decided["rule"],
        mode=decided["mode"],
        allowed=decided["allowed"],
        reasons=tuple(decided["reasons"]),
        authorities=tuple(decided["authorities"]),
        policy=decided["policy"],
        reused_from=record["decidedAt"],
    )
    return AdmittedImage(
        repository=reference.name,
        manifest_digest=manifest_digest,
        config_digest=manifest.config.digest,
        config=config,
        layers=manifest.layers,
        decision=decision,
        index_digest=index_digest,
        tag=reference.tag,
        limits=ImageLimits(**record["limits"]),
    )


def _reuse_until(record: dict[str, Any]) -> datetime:
    """The record's end of reuse, never more than `MAX_REUSE_SECONDS` after its decision."""
    decided = datetime.fromisoformat(record["decidedAt"])
    return min(datetime.fromisoformat(record["reuseUntil"]), decided + timedelta(seconds=MAX_REUSE_SECONDS))


def _key_text(reference: Reference, platform: Platform | None) -> str:
    return f"{reference.name}@{reference.digest} {platform or 'host'}"


def _record_path(store: ContentStore, reference: Reference, platform: Platform | None) -> Path:
    key = hashlib.sha256(_key_text(reference, platform).encode()).hexdigest()
    return store.meta / RECORDS_DIR / f"{key}.json"
