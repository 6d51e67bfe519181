"""Where trust signs: a Sigstore instance's services, and the two it calls itself (Rekor v1, a TSA).

The instance comes from, in order of precedence:

- `--fulcio-url`, `--rekor-url`, `--oidc-issuer`, `--timestamp-server-url` (a private instance
  named service by service; the trusted root that vouches for it from `--trusted-root`);
- `--trust-config FILE`: a Sigstore `ClientTrustConfig` (media type
  `application/vnd.dev.sigstore.clienttrustconfig.v0.1+json`: a trusted root and a signing config
  v0.2), as sigstore-python's `--trust-config` and cosign's `--trusted-root`/`--signing-config`;
- the public-good instance (its TUF repository), the default.

Keyless signing hands the resulting `ClientTrustConfig` to sigstore-python. Key signing (which
sigstore-python cannot do) logs through `upload_entry` (Rekor v1's `POST /api/v1/log/entries`,
`hashedrekord` for a signature over bytes, `dsse` for an envelope) and timestamps through
`request_timestamp` (RFC 3161 over HTTP). A service that cannot be reached or refuses is
`CouldNotCheck` (exit 5), raised before anything is pushed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pull.errors import CouldNotCheck, UsageError
from pull.records import dataclass

if TYPE_CHECKING:
    import httpx
    from sigstore.models import ClientTrustConfig

    from trust.keys.keyfiles import PublicKey

PUBLIC_GOOD_FULCIO = "https://fulcio.sigstore.dev"
PUBLIC_GOOD_REKOR = "https://rekor.sigstore.dev"
PUBLIC_GOOD_OIDC = "https://oauth2.sigstore.dev/auth"
CLIENT_TRUST_CONFIG = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
SIGNING_CONFIG = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Instance:
    """The Sigstore services to sign with, as given on the command line (None: not given)."""

    trust_config: Path | None = None
    fulcio_url: str | None = None
    rekor_url: str | None = None
    oidc_issuer: str | None = None
    timestamp_url: str | None = None
    trusted_root: Path | None = None

    @property
    def overridden(self) -> bool:
        return any(
            v is not None for v in (self.fulcio_url, self.rekor_url, self.oidc_issuer, self.timestamp_url)
        )

    def signing_config(self) -> dict[str, Any] | None:
        """The `--trust-config` file's signing config (JSON), None without one."""
        return self._config_file().get("signingConfig") if self.trust_config is not None else None

    def rekor(self) -> RekorLog:
        """The log key signatures go to: `--rekor-url` (a Rekor v1 API), else the trust config's
        log of the highest API version trust speaks (2, then 1) that is valid now, the newest of
        those first, as cosign v3 and sigstore-go choose; else the public-good Rekor (v1)."""
        if self.rekor_url is not None:
            return RekorLog(self.rekor_url.rstrip("/"), 1)
        services = (self.signing_config() or {}).get("rekorTlogUrls") or []
        for version in (2, 1):
            usable = [
                service
                for service in services
                if isinstance(service, dict)
                and service.get("majorApiVersion") == version
                and isinstance(service.get("url"), str)
                and _valid_now(service.get("validFor"))
            ]
            if usable:
                newest = max(
                    usable, key=lambda service: str((service.get("validFor") or {}).get("start", ""))
                )
                return RekorLog(str(newest["url"]).rstrip("/"), version)
        if self.trust_config is not None:
            raise UsageError(f"{self.trust_config} lists no Rekor log valid now: give --rekor-url")
        return RekorLog(PUBLIC_GOOD_REKOR, 1)

    def key_signing_log(self, upload: bool) -> RekorLog | None:
        """`rekor()` when signing with a key logs (`upload`), checked usable before anything is
        signed: a Rekor v2 entry carries no time, so it needs a timestamp authority beside it."""
        if not upload:
            return None
        log = self.rekor()
        if log.major_version == 2 and self.timestamp_authority() is None:
            raise UsageError(
                f"Rekor v2 ({log.url[:100]}) records no signing time: give --timestamp-server-url, "
                "or a trust config that lists a timestamp authority"
            )
        return log

    def timestamp_authority(self) -> str | None:
        """`--timestamp-server-url`, else the trust config's first TSA, else none."""
        if self.timestamp_url is not None:
            return self.timestamp_url
        for service in (self.signing_config() or {}).get("tsaUrls") or []:
            if isinstance(service, dict) and isinstance(service.get("url"), str):
                return str(service["url"])
        return None

    def client_trust_config(self) -> ClientTrustConfig:
        """What sigstore-python's `SigningContext` takes. Raises `UsageError` for an unusable file,
        `CouldNotCheck` when the public-good TUF repository cannot be reached."""
        from sigstore.models import ClientTrustConfig

        if self.trust_config is None and not self.overridden and self.trusted_root is None:
            try:
                return ClientTrustConfig.production()
            except Exception as exc:  # TUF unreachable or refusing: nothing was signed
                raise CouldNotCheck(
                    f"cannot load the public-good signing config: {_first_line(exc)}"
                ) from None
        document = self._config_file() if self.trust_config is not None else {}
        if self.trusted_root is not None:
            document["trustedRoot"] = _read_json(self.trusted_root, "trusted root")
        elif "trustedRoot" not in document:
            from trust.sigstore.trusted_root import public_good_root_bytes

            document["trustedRoot"] = json.loads(public_good_root_bytes())
        signing = document.get("signingConfig") or {"mediaType": SIGNING_CONFIG}
        if self.overridden or "signingConfig" not in document:
            signing = _override(
                signing,
                fulcio=self.fulcio_url or (None if "signingConfig" in document else PUBLIC_GOOD_FULCIO),
                rekor=self.rekor_url or (None if "signingConfig" in document else PUBLIC_GOOD_REKOR),
                oidc=self.oidc_issuer or (None if "signingConfig" in document else PUBLIC_GOOD_OIDC),
                tsa=self.timestamp_url,
            )
        elif self.timestamp_url is not None:
            signing = _override(signing, fulcio=None, rekor=None, oidc=None, tsa=self.timestamp_url)
        document = {
            "mediaType": CLIENT_TRUST_CONFIG,
            "trustedRoot": document["trustedRoot"],
            "signingConfig": signing,
        }
        try:
            return ClientTrustConfig.from_json(json.dumps(document))
        except Exception as exc:  # pydantic's ValidationError and sigstore's own checks
            source = self.trust_config or self.trusted_root or "the signing options"
            raise UsageError(
                f"{source} does not make a usable Sigstore trust config: {_first_line(exc)}"
            ) from None

    def _config_file(self) -> dict[str, Any]:
        assert self.trust_config is not None
        document = _read_json(self.trust_config, "trust config")
        if document.get("mediaType") != CLIENT_TRUST_CONFIG:
            raise UsageError(
                f"{self.trust_config} is not a Sigstore ClientTrustConfig (mediaType {CLIENT_TRUST_CONFIG})"
            )
        return document


def _override(
    signing: dict[str, Any], *, fulcio: str | None, rekor: str | None, oidc: str | None, tsa: str | None
) -> dict[str, Any]:
    def service(url: str) -> dict[str, Any]:
        return {
            "url": url,
            "majorApiVersion": 1,
            "validFor": {"start": "2000-01-01T00:00:00Z"},
            "operator": "trust",
        }

    out = dict(signing)
    out.setdefault("rekorTlogConfig", {"selector": "ANY"})
    out.setdefault("tsaConfig", {"selector": "ANY"})
    for field, url in (("caUrls", fulcio), ("rekorTlogUrls", rekor), ("oidcUrls", oidc), ("tsaUrls", tsa)):
        if url is not None:
            out[field] = [service(url.rstrip("/") if field != "tsaUrls" else url)]
    return out


def _valid_now(valid_for: Any) -> bool:
    """A signing config service's `validFor` (RFC 3339 `start`, optional `end`) covers now."""
    from datetime import UTC, datetime

    if not isinstance(valid_for, dict):
        return True
    now = datetime.now(UTC)
    try:
        start, end = valid_for.get("start"), valid_for.get("end")
        if isinstance(start, str) and datetime.fromisoformat(start.replace("Z", "+00:00")) > now:
            return False
        return not (isinstance(end, str) and datetime.fromisoformat(end.replace("Z", "+00:00")) < now)
    except ValueError:
        return False


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"{what} {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{what} {path} is not JSON") from None
    if not isinstance(document, dict):
        raise UsageError(f"{what} {path} is not a JSON object")
    return document


# --- Rekor ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RekorLog:
    """A transparency log to write to: its base URL and the major version of its API (1 or 2)."""

    url: str
    major_version: int


def log_signature(
    log: RekorLog,
    *,
    signature: bytes,
    public_key: PublicKey,
    message: bytes | None = None,
    envelope_json: str | None = None,
    pae: bytes | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Log a key's signature: over `message` (a message signature), or a DSSE envelope
    (`envelope_json`, whose signature is over `pae`). Returns the entry as a bundle's
    `tlogEntries[]` holds it, and for Rekor v1 cosign's SET annotation (v2 has no SET).

    Rekor v1: `hashedrekord` 0.0.1 or `dsse` 0.0.1. Rekor v2 takes only `hashedrekord` 0.0.2: a
    DSSE envelope is logged as its signature over the PAE, as sigstore-go does.
    Raises `CouldNotCheck` (the log failed) or `UsageError` (a key Rekor v2 cannot take)."""
    import hashlib

    from trust.keys.keyfiles import public_key_pem

    if log.major_version == 1:
        if envelope_json is not None:
            proposed = dsse_entry(envelope_json, public_key_pem(public_key))
        else:
            assert message is not None
            proposed = hashedrekord_entry(
                hashlib.sha256(message).digest(), signature, public_key_pem(public_key)
            )
        entry = upload_entry(log.url, proposed)
        return entry.bundle_entry(), entry.set_annotation()
    signed = pae if envelope_json is not None else message
    assert signed is not None
    key_details, hash_name = _rekor_v2_key(public_key)
    request = {
        "hashedRekordRequestV002": {
            "digest": base64.b64encode(hashlib.new(hash_name, signed).digest()).decode(),
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "verifier": {
                    "publicKey": {"rawBytes": base64.b64encode(_spki(public_key)).decode()},
                    "keyDetails": key_details,
                },
            },
        }
    }
    return upload_entry_v2(log.url, request), None


def check_loggable(log: RekorLog, public_key: PublicKey) -> None:
    """Raise `UsageError` now, before anything is signed or asked of a service, if `log` cannot
    take this key's signatures (Rekor v2: only keys that sign a digest)."""
    if log.major_version == 2:
        _rekor_v2_key(public_key)


def _rekor_v2_key(public_key: PublicKey) -> tuple[str, str]:
    """The `keyDetails` Rekor v2 files a key under, and the hash its signatures are made over."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": ("PKIX_ECDSA_P256_SHA_256", "sha256"),
                  "secp384r1": ("PKIX_ECDSA_P384_SHA_384", "sha384"),
                  "secp521r1": ("PKIX_ECDSA_P521_SHA_512", "sha512")}  # fmt: skip
        if public_key.curve.name in curves:
            return curves[public_key.curve.name]
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size in (2048, 3072, 4096):
        return f"PKIX_RSA_PKCS1V15_{public_key.key_size}_SHA256", "sha256"
    raise UsageError(
        "Rekor v2 logs ECDSA (P-256, P-384, P-521) and RSA (2048-4096) key signatures; this key's "
        "signatures are not over a digest (Ed25519): use --tlog-upload=false or a Rekor v1 log"
    )


def _spki(public_key: PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def upload_entry_v2(rekor_url: str, request: dict[str, Any]) -> dict[str, Any]:
    """Log `request` (a `CreateEntryRequest` in protobuf JSON) in the Rekor v2 log at `rekor_url`;
    the `TransparencyLogEntry` it answers (inclusion proof and checkpoint, no SET, no time).
    Its proof is checked by whoever verifies the bundle, against the trusted root's log key; here
    only its shape. Raises `CouldNotCheck`."""
    response = _post_entry(rekor_url, "/api/v2/log/entries", request)
    try:
        entry = response.json()
        proof = entry["inclusionProof"]
        well_formed = (
            isinstance(entry["canonicalizedBody"], str)
            and isinstance(entry["logId"]["keyId"], str)
            and entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
            and isinstance(proof["checkpoint"]["envelope"], str)
            and isinstance(proof["rootHash"], str)
        )
    except (ValueError, KeyError, TypeError):
        well_formed = False
    if not well_formed:
        raise CouldNotCheck(f"Rekor {rekor_url[:100]} answered something that is not a v2 log entry")
    # rekor-tiles writes `"inclusionPromise": null`: a bundle leaves unset fields out.
    return {name: value for name, value in entry.items() if value is not None}


# --- Rekor v1 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEntry:
    """A Rekor v1 entry as the log returned it."""

    body: str
    """base64 of the canonicalized body."""
    integrated_time: int
    log_index: int
    log_id: str
    """hex."""
    set_signature: str
    """base64 SignedEntryTimestamp."""
    proof: dict[str, Any] | None

    def set_annotation(self) -> str:
        """cosign's `dev.sigstore.cosign/bundle` annotation (the SET and what it signs)."""
        payload = {
            "body": self.body,
            "integratedTime": self.integrated_time,
            "logIndex": self.log_index,
            "logID": self.log_id,
        }
        return json.dumps(
            {"SignedEntryTimestamp": self.set_signature, "Payload": payload}, separators=(",", ":")
        )

    def bundle_entry(self) -> dict[str, Any]:
        """The entry as a Sigstore bundle's `verificationMaterial.tlogEntries[]` holds it."""
        body = json.loads(base64.b64decode(self.body))
        entry: dict[str, Any] = {
            "logIndex": str(self.log_index),
            "logId": {"keyId": base64.b64encode(bytes.fromhex(self.log_id)).decode()},
            "kindVersion": {"kind": body.get("kind"), "version": body.get("apiVersion")},
            "integratedTime": str(self.integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": self.set_signature},
            "canonicalizedBody": self.body,
        }
        if self.proof is not None:
            entry["inclusionProof"] = {
                "logIndex": str(self.proof["logIndex"]),
                "rootHash": base64.b64encode(bytes.fromhex(self.proof["rootHash"])).decode(),
                "treeSize": str(self.proof["treeSize"]),
                "hashes": [
                    base64.b64encode(bytes.fromhex(h)).decode() for h in self.proof.get("hashes") or []
                ],
                "checkpoint": {"envelope": self.proof["checkpoint"]},
            }
        return entry


def hashedrekord_entry(sha256: bytes, signature: bytes, verifier_pem: bytes) -> dict[str, Any]:
    """A `hashedrekord` 0.0.1 proposed entry: a signature over bytes whose SHA-256 is `sha256`."""
    return {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": sha256.hex()}},
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "publicKey": {"content": base64.b64encode(verifier_pem).decode()},
            },
        },
    }


def dsse_entry(envelope_json: str, verifier_pem: bytes) -> dict[str, Any]:
    """A `dsse` 0.0.1 proposed entry (Rekor stores the hashes and signatures, not the envelope)."""
    return {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "proposedContent": {
                "envelope": envelope_json,
                "verifiers": [base64.b64encode(verifier_pem).decode()],
            }
        },
    }


def upload_entry(rekor_url: str, proposed: dict[str, Any]) -> LoggedEntry:
    """Log `proposed` in the Rekor v1 log at `rekor_url`. Raises `CouldNotCheck`."""
    response = _post_entry(rekor_url, "/api/v1/log/entries", proposed)
    try:
        document = response.json()
        (entry,) = document.values()
        verification = entry["verification"]
        return LoggedEntry(
            str(entry["body"]),
            int(entry["integratedTime"]),
            int(entry["logIndex"]),
            str(entry["logID"]),
            str(verification["signedEntryTimestamp"]),
            verification.get("inclusionProof"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CouldNotCheck(f"Rekor {rekor_url[:100]} answered something that is not a log entry") from None


def _post_entry(rekor_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST a new entry to a Rekor log; its answer when it took it (200/201, at most
    `MAX_RESPONSE_BYTES`). Raises `CouldNotCheck`."""
    import httpx

    try:
        response = httpx.post(
            f"{rekor_url}{path}", json=body, timeout=TIMEOUT_SECONDS, headers={"Accept": "application/json"}
        )
    except httpx.HTTPError as exc:
        raise CouldNotCheck(f"Rekor {rekor_url[:100]}: {type(exc).__name__} {_first_line(exc)}") from None
    if response.status_code not in (200, 201) or len(response.content) > MAX_RESPONSE_BYTES:
        raise CouldNotCheck(
            f"Rekor {rekor_url[:100]} refused the entry: HTTP {response.status_code} {response.text[:160]}"
        )
    return response


# --- RFC 3161 --------------------------------------------------------------------------------------


def request_timestamp(url: str, signature: bytes) -> bytes:
    """A DER TimeStampResp from the TSA at `url` over `signature` (SHA-256 imprint, nonce, with
    its certificates). Raises `CouldNotCheck`."""
    import httpx
    from rfc3161_client import TimestampRequestBuilder, decode_timestamp_response

    request = (
        TimestampRequestBuilder().data(signature).nonce(nonce=True).cert_request(cert_request=True).build()
    )
    try:
        response = httpx.post(
            url,
            content=request.as_bytes(),
            headers={"Content-Type": "application/timestamp-query"},
            timeout=TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        raise CouldNotCheck(
            f"timestamp authority {url[:100]}: {type(exc).__name__} {_first_line(exc)}"
        ) from None
    if response.status_code not in (200, 201) or len(response.content) > MAX_RESPONSE_BYTES:
        raise CouldNotCheck(f"timestamp authority {url[:100]} answered HTTP {response.status_code}")
    try:
        decoded = decode_timestamp_response(response.content)
        granted = decoded.status in (0, 1) and decoded.tst_info.nonce == request.nonce
    except ValueError:
        granted = False
    if not granted:
        raise CouldNotCheck(f"timestamp authority {url[:100]} did not grant a timestamp for this request")
    return bytes(response.content)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
