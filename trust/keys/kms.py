"""Keys in a cloud KMS, named as cosign names them: `awskms://[ENDPOINT/]KEY-ID-OR-ALIAS`.

    awskms:///1234abcd-12ab-34cd-56ef-1234567890ab            key id, region from the usual chain
    awskms:///alias/release-signing                           an alias
    awskms:///arn:aws:kms:us-east-2:111122223333:key/1234…    an ARN (its region is used)
    awskms://kms.internal.example:4566/alias/release          a KMS-compatible endpoint (HTTPS)

Signing goes through KMS's `Sign` API: payloads up to 4 KiB (cosign payloads, Notation signing
inputs: public data) are sent as they are (`MessageType=RAW`), larger ones as a digest computed
here (`DIGEST`); the public key comes from `GetPublicKey`. Credentials and the
region come from boto3's usual chain (environment, shared config and credentials files, SSO,
instance or task roles); `AWS_ENDPOINT_URL_KMS` (boto3's own setting) points at a plain-HTTP
emulator such as moto in tests. boto3 is imported only when an `awskms://` key is used.

Other providers plug in the same way: a function `signer(uri) -> Signer` and `public_key(uri)`
registered in `trust.keys.references.PROVIDERS` under the URI scheme. `gcpkms://`,
`azurekms://` and `hashivault://` are named there and refused with a pointer to the docs until
someone adds them (see docs/signing.md, "Adding a KMS").
"""

from __future__ import annotations

import re
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pull.errors import CouldNotCheck, UsageError
from pull.records import dataclass

SCHEME = "awskms://"
MAX_RAW_MESSAGE = 4096
"""KMS's limit for `MessageType=RAW`."""
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)/[A-Za-z0-9/_-]+$")
_KEY = re.compile(r"^([0-9a-fA-F-]{36}|alias/[A-Za-z0-9/_-]+|mrk-[0-9a-f]{32})$")
_ENDPOINT = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_ECDSA = {"secp256r1": ("ECDSA_SHA_256", hashes.SHA256), "secp384r1": ("ECDSA_SHA_384", hashes.SHA384),
          "secp521r1": ("ECDSA_SHA_512", hashes.SHA512)}  # fmt: skip

_KEY_PROBLEMS = frozenset(
    {"NotFoundException", "DisabledException", "InvalidKeyUsageException", "AccessDeniedException",
     "KMSInvalidStateException", "ValidationException", "UnrecognizedClientException"}
)  # fmt: skip
"""KMS error codes about the key or the caller's rights (exit 2); others are "could not check" (exit 5)."""


class KmsError(UsageError):
    """A malformed KMS URI, or a key KMS refuses to use (exit 2)."""


class KmsUnavailable(CouldNotCheck):
    """KMS could not be reached or answered with an error that is not about the key (exit 5)."""


@dataclass(frozen=True)
class AwsKmsUri:
    uri: str
    endpoint: str | None
    key_id: str

    @property
    def region(self) -> str | None:
        match = _ARN.match(self.key_id)
        return match.group(1) if match else None


def parse_uri(uri: str) -> AwsKmsUri:
    if not uri.startswith(SCHEME):
        raise KmsError(f"{uri[:100]!r} is not an awskms:// URI")
    endpoint, slash, key_id = uri[len(SCHEME) :].partition("/")
    if not slash:
        raise KmsError(f"{uri[:100]}: use awskms:///KEY-ID (three slashes) or awskms://ENDPOINT/KEY-ID")
    if endpoint and not _ENDPOINT.match(endpoint):
        raise KmsError(f"{uri[:100]}: {endpoint[:60]!r} is not a host[:port] endpoint")
    if not (_KEY.match(key_id) or _ARN.match(key_id)):
        raise KmsError(f"{uri[:100]}: {key_id[:80]!r} is not a KMS key id, alias/NAME or key ARN")
    return AwsKmsUri(uri, endpoint or None, key_id)


def _client(parsed: AwsKmsUri) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise KmsError("awskms:// keys need boto3: pip install 'trust[kms]'") from None
    options: dict[str, Any] = {
        "config": Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
    }
    if parsed.region:
        options["region_name"] = parsed.region
    if parsed.endpoint:
        options["endpoint_url"] = f"https://{parsed.endpoint}"
    try:
        return boto3.session.Session().client("kms", **options)
    except Exception as exc:  # botocore raises NoRegionError and friends, all with a readable message
        raise KmsError(f"cannot set up AWS KMS for {parsed.uri[:100]}: {exc}") from None


def _call(parsed: AwsKmsUri, operation: str, **arguments: Any) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    client = _client(parsed)
    try:
        return dict(getattr(client, operation)(**arguments))
    except NoCredentialsError:
        raise KmsError(
            f"no AWS credentials for {parsed.uri[:100]} (environment, config files or a role)"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        message = str(error.get("Message", ""))[:200]
        if code in _KEY_PROBLEMS:
            raise KmsError(
                f"AWS KMS refused {operation} with {parsed.key_id[:100]}: {code} {message}"
            ) from None
        raise KmsUnavailable(
            f"AWS KMS {operation} failed for {parsed.key_id[:100]}: {code} {message}"
        ) from None
    except BotoCoreError as exc:
        raise KmsUnavailable(f"AWS KMS unreachable for {parsed.uri[:100]}: {exc}") from None


def public_key(uri: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    parsed = parse_uri(uri)
    answer = _call(parsed, "get_public_key", KeyId=parsed.key_id)
    if answer.get("KeyUsage") not in (None, "SIGN_VERIFY"):
        raise KmsError(f"KMS key {parsed.key_id[:100]} is not a signing key ({answer.get('KeyUsage')})")
    try:
        key = serialization.load_der_public_key(bytes(answer["PublicKey"]))
    except (KeyError, ValueError):
        raise KmsError(f"KMS returned no usable public key for {parsed.key_id[:100]}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise KmsError(f"KMS key {parsed.key_id[:100]} is neither EC nor RSA")
    return key


class AwsKmsSigner:
    """A `trust.keys` signer through AWS KMS `Sign` (cosign's algorithms: ECDSA by curve, RSA PKCS#1 v1.5)."""

    def __init__(self, uri: str) -> None:
        self.parsed = parse_uri(uri)
        self._public_key = public_key(uri)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        return self._public_key

    def public_key_pem(self) -> bytes:
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: bytes) -> bytes:
        key = self._public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm, hash_type = _ECDSA[key.curve.name]
            return self.sign_with(payload, algorithm, hash_type())
        return self.sign_with(payload, "RSASSA_PKCS1_V1_5_SHA_256", hashes.SHA256())

    def sign_ecdsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm) -> bytes:
        """ECDSA (DER) as Notary Project signatures need it: the hash goes with the curve."""
        return self.sign_with(payload, f"ECDSA_SHA_{hash_algorithm.digest_size * 8}", hash_algorithm)

    def sign_rsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm, *, pss: bool) -> bytes:
        scheme = "RSASSA_PSS" if pss else "RSASSA_PKCS1_V1_5"
        return self.sign_with(payload, f"{scheme}_SHA_{hash_algorithm.digest_size * 8}", hash_algorithm)

    def sign_with(self, payload: bytes, algorithm: str, hash_algorithm: hashes.HashAlgorithm) -> bytes:
        """KMS `Sign` over `payload` (DER for ECDSA, as KMS returns it)."""
        if len(payload) <= MAX_RAW_MESSAGE:
            message, message_type = payload, "RAW"
        else:
            digest = hashes.Hash(hash_algorithm)
            digest.update(payload)
            message, message_type = digest.finalize(), "DIGEST"
        answer = _call(
            self.parsed,
            "sign",
            KeyId=self.parsed.key_id,
            Message=message,
            MessageType=message_type,
            SigningAlgorithm=algorithm,
        )
        signature = answer.get("Signature")
        if not isinstance(signature, bytes | bytearray):
            raise KmsUnavailable(f"AWS KMS returned no signature for {self.parsed.key_id[:100]}")
        return bytes(signature)
