"""Cosign key files: generate, encrypt, load and check keys; sign and verify raw signatures.

Cosign's private key file is a PEM block of type `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign:
`ENCRYPTED COSIGN PRIVATE KEY`) whose body is the JSON written by go-securesystemslib's
`encrypted` package:

    {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64, 32 bytes>"},
     "cipher":{"name":"nacl/secretbox","nonce":"<base64, 24 bytes>"},"ciphertext":"<base64>"}

The secretbox key is `scrypt(password, salt, N, r, p, 32)`; the plaintext is the PKCS#8 DER private
key. Only the three scrypt parameter sets that go-securesystemslib accepts are accepted here, so a
hostile key file cannot make us burn memory or time. The public key is a PKIX `PUBLIC KEY` PEM.

Signature algorithms (what cosign's default signer/verifier uses for each key type):

    ECDSA P-256 / P-384 / P-521   ASN.1 DER signature over SHA-256 / SHA-384 / SHA-512
    RSA (2048 to 8192 bits)       PKCS#1 v1.5 with SHA-256
    Ed25519                       pure Ed25519 over the payload

Keys held elsewhere (KMS, HSM, a PKCS#8 file) are reached through securesystemslib signer URIs
(`signer_from_uri`); securesystemslib is imported only there.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pull.errors import HOST_FAULT_ERRNOS, HostFault, UsageError
from pull.records import dataclass
from pull.strictjson import loads as strict_json
from pull.userfile import open_regular_file
from trust.errors import KeyLoadError, WrongPassword

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

SIGSTORE_PRIVATE_KEY_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
"""PEM type cosign writes since v2 (and `trust keygen` writes)."""
COSIGN_PRIVATE_KEY_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
"""PEM type of keys written by cosign v1; still accepted."""
ENCRYPTED_PEM_TYPES = frozenset({SIGSTORE_PRIVATE_KEY_PEM, COSIGN_PRIVATE_KEY_PEM})
PLAIN_PRIVATE_PEM_TYPES = frozenset({"PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"})

SCRYPT_N = 65536
"""go-securesystemslib's "standard" strength (its default for `encrypted.Encrypt`)."""
SCRYPT_R = 8
SCRYPT_P = 1
ALLOWED_SCRYPT_PARAMS = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
"""(N, r, p) accepted when loading: go-securesystemslib's legacy, standard and OWASP sets."""
SALT_BYTES = 32
NONCE_BYTES = 24
SECRETBOX_KEY_BYTES = 32

MAX_KEY_FILE_BYTES = 64 * 1024
"""Key files larger than this are refused before parsing."""
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
ALLOWED_CURVES = ("secp256r1", "secp384r1", "secp521r1")

PASSWORD_ENV_VARS = ("TRUST_PASSWORD", "COSIGN_PASSWORD")
"""Environment variables consulted for a key password, in order. Set-but-empty means empty."""

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


# --- generating and encrypting ---------------------------------------------------------------


def generate_keypair(password: bytes) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key pair as (`ENCRYPTED SIGSTORE PRIVATE KEY` PEM, `PUBLIC KEY` PEM).

    The password may be empty (cosign allows that too).
    """
    private_key = ec.generate_private_key(ec.SECP256R1())
    return encrypt_private_key(private_key, password), public_key_pem(private_key.public_key())


def encrypt_private_key(
    private_key: PrivateKey,
    password: bytes,
    *,
    pem_type: str = SIGSTORE_PRIVATE_KEY_PEM,
    scrypt_n: int = SCRYPT_N,
) -> bytes:
    """Encrypt `private_key` into cosign's PEM format (byte-compatible with `cosign generate-key-pair`)."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    from nacl.secret import SecretBox

    if pem_type not in ENCRYPTED_PEM_TYPES:
        raise ValueError(f"unknown encrypted key PEM type {pem_type!r}")
    if (scrypt_n, SCRYPT_R, SCRYPT_P) not in ALLOWED_SCRYPT_PARAMS:
        raise ValueError(f"scrypt N={scrypt_n} would not load in cosign")
    _check_private_key(private_key, "new key")
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    key = Scrypt(salt=salt, length=SECRETBOX_KEY_BYTES, n=scrypt_n, r=SCRYPT_R, p=SCRYPT_P).derive(password)
    ciphertext = SecretBox(key).encrypt(der, nonce).ciphertext
    # Field order and compact separators as Go's json.Marshal writes the struct.
    body = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    return _pem_encode(pem_type, json.dumps(body, separators=(",", ":")).encode("ascii"))


def public_key_pem(public_key: PublicKey) -> bytes:
    """The PKIX `PUBLIC KEY` PEM cosign writes to `cosign.pub`."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_keypair(prefix: Path, private_pem: bytes, public_pem: bytes) -> tuple[Path, Path]:
    """Write `PREFIX.key` (mode 0600) and `PREFIX.pub`; never overwrites. Raises `UsageError`."""
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise UsageError(f"{path} already exists; remove it or choose another --output-prefix")
    written: list[Path] = []
    try:
        for path, data, mode in ((key_path, private_pem, 0o600), (pub_path, public_pem, 0o644)):
            _write_new(path, data, mode)
            written.append(path)
    except OSError as exc:
        for path in written:  # never half a pair (a full disk may take the key and refuse the .pub)
            path.unlink(missing_ok=True)
        message = f"cannot write key pair {key_path}: {exc.strerror or exc}"
        if exc.errno in HOST_FAULT_ERRNOS:  # the host's doing (full, read-only), not the path's
            raise HostFault(message) from None
        raise UsageError(message) from None
    return key_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # a full disk says so here, not after we reported success
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# --- loading -----------------------------------------------------------------------------------

Password = bytes | Callable[[], bytes] | None
"""A password, a function asked for it only if the key is encrypted, or None (no password)."""


def load_private_key(pem: bytes, password: Password = None, *, source: str = "key") -> PrivateKey:
    """Load a cosign encrypted key or a plain PEM private key, and check its algorithm and size.

    `source` names the key in messages (usually its path). Raises `WrongPassword` or `KeyLoadError`.
    """
    pem_type, block = _first_pem_block(pem, source)
    if pem_type in ENCRYPTED_PEM_TYPES:
        body = _pem_body(block, source)
        secret = password() if callable(password) else (password if password is not None else b"")
        der = decrypt_envelope(body, secret, source=source)
        try:
            key: Any = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyLoadError(f"cosign key {source} does not hold a PKCS#8 private key") from None
    elif pem_type in PLAIN_PRIVATE_PEM_TYPES:
        try:
            key = serialization.load_pem_private_key(block, password=None)
        except TypeError:
            raise KeyLoadError(
                f"private key {source} is encrypted in a legacy PEM format",
                advice="Decrypt it (openssl pkey) or convert it with `cosign import-key-pair`.",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyLoadError(f"private key {source} is malformed ({pem_type} PEM)") from None
    elif pem_type == "ENCRYPTED PRIVATE KEY":
        raise KeyLoadError(
            f"private key {source} is an encrypted PKCS#8 key, which is not supported",
            advice="Decrypt it (openssl pkey) or convert it with `cosign import-key-pair`.",
        )
    else:
        raise KeyLoadError(f"{source} holds a {pem_type!r} PEM block, not a private key")
    return _check_private_key(key, source)


def load_public_key(pem: bytes, *, source: str = "key") -> PublicKey:
    """Load a PKIX `PUBLIC KEY` PEM (as in `cosign.pub`) and check its algorithm and size."""
    pem_type, block = _first_pem_block(pem, source)
    if pem_type != "PUBLIC KEY":
        raise KeyLoadError(f"{source} holds a {pem_type!r} PEM block, not a PUBLIC KEY")
    try:
        key: Any = serialization.load_pem_public_key(block)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyLoadError(f"public key {source} is malformed") from None
    return check_public_key(key, source)


def load_private_key_file(path: str | Path, password: Password = None) -> PrivateKey:
    return load_private_key(read_key_file(path), password, source=str(path))


def load_public_key_file(path: str | Path) -> PublicKey:
    return load_public_key(read_key_file(path), source=str(path))


def is_encrypted_key(pem: bytes) -> bool:
    """Whether `pem` is a cosign encrypted key (and so loading it needs a password)."""
    match = _match_first_pem(pem[:MAX_KEY_FILE_BYTES])
    return match is not None and match.group(1).decode("ascii") in ENCRYPTED_PEM_TYPES


def decrypt_envelope(body: bytes, password: bytes, *, source: str = "key") -> bytes:
    """Decrypt go-securesystemslib's `encrypted` JSON (the body of a cosign key PEM)."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    def bad(what: str) -> KeyLoadError:
        return KeyLoadError(f"cosign key {source} is malformed: {what}")

    try:
        doc = strict_json(body, "the key body")
    except ValueError:
        raise bad("its body is not JSON") from None
    kdf = _field(doc, "kdf", dict, bad)
    cipher = _field(doc, "cipher", dict, bad)
    if _field(kdf, "name", str, bad) != "scrypt":
        raise bad(f"unsupported KDF {kdf['name'][:40]!r}")
    if _field(cipher, "name", str, bad) != "nacl/secretbox":
        raise bad(f"unsupported cipher {cipher['name'][:40]!r}")
    params = _field(kdf, "params", dict, bad)
    n, r, p = (_field(params, name, int, bad) for name in ("N", "r", "p"))
    if (n, r, p) not in ALLOWED_SCRYPT_PARAMS:
        raise KeyLoadError(
            f"cosign key {source} uses unsupported scrypt parameters N={n} r={r} p={p}",
            advice="Only N=32768, 65536 or 131072 with r=8, p=1 are accepted (as cosign does).",
        )
    salt = _b64_field(kdf, "salt", bad)
    nonce = _b64_field(cipher, "nonce", bad)
    ciphertext = _b64_field(doc, "ciphertext", bad)
    if not 16 <= len(salt) <= 64:
        raise bad("salt length out of range")
    if len(nonce) != NONCE_BYTES:
        raise bad(f"nonce must be {NONCE_BYTES} bytes")
    key = Scrypt(salt=salt, length=SECRETBOX_KEY_BYTES, n=n, r=r, p=p).derive(password)
    try:
        return bytes(SecretBox(key).decrypt(ciphertext, nonce))
    except CryptoError:
        raise WrongPassword(source) from None


def check_public_key(key: object, source: str = "key") -> PublicKey:
    """Refuse key types and sizes cosign's "good key" rules refuse. Returns the key, typed."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise KeyLoadError(
                f"key {source} uses curve {key.curve.name}; only P-256, P-384 and P-521 are accepted"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise KeyLoadError(
                f"key {source} is RSA-{key.key_size}; RSA keys must be {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    kind = type(key).__name__.lstrip("_").removesuffix("PublicKey").removesuffix("PrivateKey")
    raise KeyLoadError(f"key {source} is of unsupported type {kind}; use ECDSA P-256/384/521, RSA or Ed25519")


def _check_private_key(key: object, source: str) -> PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        check_public_key(key.public_key(), source)
        return key
    check_public_key(key, source)  # raises with the type's name
    raise AssertionError("unreachable")


def read_key_file(path: str | Path) -> bytes:
    """The bytes of a key file, at most `MAX_KEY_FILE_BYTES`. Raises KeyLoadError."""
    try:
        with open_regular_file(path) as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyLoadError(f"cannot read key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyLoadError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _first_pem_block(pem: bytes, source: str) -> tuple[str, bytes]:
    """(type, whole block) of the first PEM block, the one Go's `pem.Decode` would take."""
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise KeyLoadError(f"key {source} is larger than {MAX_KEY_FILE_BYTES} bytes")
    match = _match_first_pem(pem)
    if match is None:
        raise KeyLoadError(f"{source} is not a PEM key file")
    return match.group(1).decode("ascii"), match.group(0)


def _match_first_pem(pem: bytes) -> re.Match[bytes] | None:
    """Match only at the first BEGIN line, so hostile input cannot make the search quadratic."""
    start = pem.find(b"-----BEGIN ")
    return _PEM_BLOCK.match(pem, start) if start >= 0 else None


def _pem_body(block: bytes, source: str) -> bytes:
    """The base64-decoded body of a PEM block without headers (cosign's encrypted keys have none)."""
    inner = block.split(b"\n", 1)[1].rsplit(b"-----END", 1)[0]
    try:
        return base64.b64decode(b"".join(inner.split()), validate=True)
    except binascii.Error:
        raise KeyLoadError(f"{source}: PEM block is not valid base64") from None


def _pem_encode(pem_type: str, der: bytes) -> bytes:
    """PEM as Go's `pem.EncodeToMemory` writes it: 64-column base64 lines, trailing newline."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return ("\n".join([f"-----BEGIN {pem_type}-----", *lines, f"-----END {pem_type}-----"]) + "\n").encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _field(doc: object, name: str, kind: type, bad: Callable[[str], KeyLoadError]) -> Any:
    if not isinstance(doc, dict) or name not in doc:
        raise bad(f"missing {name!r}")
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(f"{name!r} must be a {kind.__name__}")
    return value


def _b64_field(doc: object, name: str, bad: Callable[[str], KeyLoadError]) -> bytes:
    try:
        return base64.b64decode(_field(doc, name, str, bad), validate=True)
    except binascii.Error:
        raise bad(f"{name!r} is not base64") from None


# --- passwords ---------------------------------------------------------------------------------


def password_from_env() -> bytes | None:
    """`TRUST_PASSWORD`, else `COSIGN_PASSWORD`, as bytes; None when neither is set."""
    for name in PASSWORD_ENV_VARS:
        value = os.environ.get(name)
        if value is not None:
            return os.fsencode(value)  # the exact bytes of the environment
    return None


def get_password(
    *,
    confirm: bool,
    purpose: str = "private key",
    prompt: Callable[[str], str] | None = None,
) -> bytes:
    """The key password from the environment, else asked at the terminal (twice if `confirm`).

    An empty password is allowed. Without a terminal and without the variables, raises
    `KeyLoadError` instead of hanging on stdin. `prompt` replaces `getpass.getpass` (tests).
    """
    from_env = password_from_env()
    if from_env is not None:
        return from_env
    if prompt is None:
        if not sys.stdin.isatty():
            raise KeyLoadError(
                f"no password for the {purpose}: set TRUST_PASSWORD (or COSIGN_PASSWORD)",
                advice="Standard input is not a terminal, so the password cannot be asked for.",
            )
        prompt = getpass.getpass
    first = prompt(f"Enter password for {purpose}: ")
    if confirm and prompt(f"Enter password for {purpose} again: ") != first:
        raise KeyLoadError("passwords do not match")
    return first.encode("utf-8")


# --- signing and verifying ---------------------------------------------------------------------


class Signer(Protocol):
    """Something that signs payloads the way cosign's default signer for its key type does."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, payload: bytes) -> bytes:
        """The raw signature (DER for ECDSA) over `payload`."""
        ...

    def public_key_pem(self) -> bytes: ...


class KeySigner:
    """A `Signer` over a private key held in memory (a cosign key file or a plain PEM key)."""

    def __init__(self, private_key: PrivateKey) -> None:
        self._private_key = _check_private_key(private_key, "signing key")

    @property
    def public_key(self) -> PublicKey:
        return self._private_key.public_key()

    def sign(self, payload: bytes) -> bytes:
        key = self._private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(payload, ec.ECDSA(_CURVE_HASHES[key.curve.name]()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(payload)

    def public_key_pem(self) -> bytes:
        return public_key_pem(self.public_key)


class URISigner:
    """A `Signer` backed by a securesystemslib signer (`file2:PATH`, `gcpkms:…`, `hsm:…`, …)."""

    def __init__(self, signer: Any, public_key: PublicKey) -> None:
        self._signer = signer
        self._public_key = public_key

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    def sign(self, payload: bytes) -> bytes:
        try:
            signature = self._signer.sign(payload)
            raw = bytes.fromhex(signature.signature)
        except Exception as exc:  # plug-ins raise anything; keep the split (python-tuf's fetcher rule)
            raise KeyLoadError(f"signing with {type(self._signer).__name__} failed: {exc}") from None
        if not verify_bytes(self._public_key, payload, raw):
            raise KeyLoadError("the signer's signature does not verify with its public key")
        return raw

    def public_key_pem(self) -> bytes:
        return public_key_pem(self._public_key)


def signer_from_uri(uri: str, public_key_pem_bytes: bytes) -> URISigner:
    """A signer for a securesystemslib private key URI, e.g. `file2:/path/key.pem`.

    The public key fixes the signing scheme to the one cosign verifies with (RSA: PKCS#1 v1.5
    SHA-256, never PSS). Raises `KeyLoadError`.
    """
    # Both names are re-exported by securesystemslib.signer without an __all__.
    from securesystemslib.signer import Signer as SSLibSigner  # type: ignore[attr-defined]
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    public_key = load_public_key(public_key_pem_bytes, source=f"public key for {uri}")
    if isinstance(public_key, rsa.RSAPublicKey):
        scheme: str | None = "rsa-pkcs1v15-sha256"
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        scheme = {"secp256r1": "ecdsa-sha2-nistp256", "secp384r1": "ecdsa-sha2-nistp384"}.get(
            public_key.curve.name, "ecdsa-sha2-nistp521"
        )
    else:
        scheme = "ed25519"
    try:
        sslib_key = SSlibKey.from_crypto(public_key, scheme=scheme)
        signer = SSLibSigner.from_priv_key_uri(uri, sslib_key)
    except Exception as exc:  # ValueError, OSError, UnsupportedLibraryError, KeyMismatchError, …
        raise KeyLoadError(f"cannot use signer {uri}: {exc}") from None
    return URISigner(signer, public_key)


def verify_bytes(public_key: PublicKey, payload: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid signature over `payload` by `public_key` (cosign's rules).

    ECDSA on P-384/P-521 also accepts SHA-256, which cosign before v2.2 used for every curve.
    """
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            hash_types = [_CURVE_HASHES[public_key.curve.name]]
            if hash_types[0] is not hashes.SHA256:
                hash_types.append(hashes.SHA256)
            for hash_type in hash_types:
                try:
                    public_key.verify(signature, payload, ec.ECDSA(hash_type()))
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            return True
        public_key.verify(signature, payload)
        return True
    except (InvalidSignature, ValueError):
        return False


def public_key_der(public_key: PublicKey) -> bytes:
    """The SubjectPublicKeyInfo DER of a key (what key hints and fingerprints hash)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return public_key.public_bytes(serialization.Encoding.DER, spki)


def fingerprint(public_key: PublicKey) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo DER (equals a Rekor log ID for a log's key)."""
    return hashlib.sha256(public_key_der(public_key)).hexdigest()


@dataclass(frozen=True)
class TrustedKey:
    """A public key a verifier trusts, with the name shown when it signed (usually its file path)."""

    name: str
    public_key: PublicKey

    @classmethod
    def from_pem(cls, pem: bytes, name: str) -> TrustedKey:
        return cls(name, load_public_key(pem, source=name))

    @classmethod
    def from_file(cls, path: str | Path) -> TrustedKey:
        return cls(str(path), load_public_key_file(path))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)
