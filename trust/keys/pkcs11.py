"""Keys on a PKCS#11 token (an HSM, a smart card, SoftHSM): RFC 7512 URIs, signing, key generation.

A key is named as cosign names it, by an RFC 7512 URI:

    pkcs11:token=release;object=signing-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234

Path attributes (`;`-separated) select the token and the key: `token` (label), `serial`,
`slot-id`, `object` (key label), `id` (key id, percent-encoded bytes). Query attributes (`&`) say
how to reach it: `module-path` (the PKCS#11 library; `TRUST_PKCS11_MODULE` if absent), `pin-value`
or `pin-source=file:PATH`; without either, the PIN comes from `TRUST_PKCS11_PIN`, else a prompt.

The binding is python-pkcs11 (not PyKCS11): both install here as wheels and are maintained, but
python-pkcs11 gives typed objects (tokens, sessions, keys with `sign`), ships type hints, and has
the EC helpers (named-curve parameters, SubjectPublicKeyInfo) that key generation needs, where
PyKCS11 is a thin SWIG layer over the C structures.

Loading a PKCS#11 module runs its code in this process: module paths come from the command line
or from a policy file, which must be as trusted as the binary itself (root-owned, like the store).
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pull.errors import UsageError
from pull.records import dataclass, field
from pull.userfile import open_regular_file

SCHEME = "pkcs11:"
PIN_ENV = "TRUST_PKCS11_PIN"
MODULE_ENV = "TRUST_PKCS11_MODULE"
_PATH_ATTRIBUTES = frozenset(
    {"token", "object", "id", "serial", "slot-id", "manufacturer", "model", "type", "library-manufacturer",
     "library-description", "library-version", "slot-description", "slot-manufacturer"}
)  # fmt: skip
_QUERY_ATTRIBUTES = frozenset({"module-path", "module-name", "pin-value", "pin-source"})
_CURVE_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
_LIBRARIES: dict[str, Any] = {}
"""python-pkcs11 allows one `lib` object per module per process."""


class Pkcs11Error(UsageError):
    """A PKCS#11 URI, module, token, PIN or key problem: one line, exit 2."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI: what selects the token and the key, and how to log in."""

    uri: str
    path: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self._text("token")

    @property
    def object(self) -> str | None:
        return self._text("object")

    @property
    def key_id(self) -> bytes | None:
        return self.path.get("id")

    def _text(self, name: str) -> str | None:
        value = self.path.get(name)
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def module_path(self) -> str:
        path = self.query.get("module-path") or os.environ.get(MODULE_ENV)
        if not path:
            raise Pkcs11Error(f"{self.redacted()} names no module-path (nor is {MODULE_ENV} set)")
        if not os.path.isabs(path) or not os.path.isfile(path):
            raise Pkcs11Error(f"PKCS#11 module {path[:200]} is not an existing absolute path")
        return path

    def redacted(self) -> str:
        """The URI without its PIN, for messages."""
        text = self.uri
        if "pin-value=" in text:
            head, _, tail = text.partition("pin-value=")
            text = head + "pin-value=***" + ("&" + tail.split("&", 1)[1] if "&" in tail else "")
        return text[:300]

    def pin(self, *, prompt: bool = True) -> str:
        """`pin-value`, `pin-source=file:`, TRUST_PKCS11_PIN, or the terminal, in that order."""
        if "pin-value" in self.query:
            return self.query["pin-value"]
        source = self.query.get("pin-source")
        if source is not None:
            path = source.removeprefix("file:")
            try:
                with open_regular_file(path) as handle:
                    return handle.read(4096).decode("utf-8", "replace").strip("\r\n")
            except OSError as exc:
                raise Pkcs11Error(f"cannot read pin-source {path[:200]}: {exc.strerror or exc}") from None
        if PIN_ENV in os.environ:
            return os.environ[PIN_ENV]
        if prompt and sys.stdin.isatty():
            return getpass.getpass(f"PIN for PKCS#11 token {self.token or '?'}: ")
        raise Pkcs11Error(f"no PIN for {self.redacted()}: set {PIN_ENV} or pin-value in the URI")


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse `pkcs11:PATH[?QUERY]` (RFC 7512). Raises `Pkcs11Error` for anything malformed."""
    if not uri.startswith(SCHEME):
        raise Pkcs11Error(f"{uri[:100]!r} is not a pkcs11: URI")
    body = uri[len(SCHEME) :]
    path_text, _, query_text = body.partition("?")
    path: dict[str, bytes] = {}
    for part in filter(None, path_text.split(";")):
        name, equals, value = part.partition("=")
        if not equals or name not in _PATH_ATTRIBUTES:
            raise Pkcs11Error(f"unknown or malformed PKCS#11 URI path attribute {part[:60]!r}")
        if name in path:
            raise Pkcs11Error(f"PKCS#11 URI attribute {name!r} is given twice")
        path[name] = unquote_to_bytes(value)
    query: dict[str, str] = {}
    for part in filter(None, query_text.split("&")):
        name, equals, value = part.partition("=")
        if not equals or name not in _QUERY_ATTRIBUTES:
            raise Pkcs11Error(f"unknown or malformed PKCS#11 URI query attribute {part[:60]!r}")
        if name in query:
            raise Pkcs11Error(f"PKCS#11 URI attribute {name!r} is given twice")
        query[name] = unquote_to_bytes(value).decode("utf-8", "replace")
    if "pin-value" in query and "pin-source" in query:
        raise Pkcs11Error("a PKCS#11 URI gives pin-value and pin-source; give one")
    if "object" not in path and "id" not in path:
        raise Pkcs11Error(f"{uri[:100]}: name the key with object= (its label) or id=")
    return Pkcs11Uri(uri, path, query)


def _library(path: str) -> Any:
    import pkcs11

    if path not in _LIBRARIES:
        try:
            _LIBRARIES[path] = pkcs11.lib(path)
        except (RuntimeError, OSError) as exc:
            raise Pkcs11Error(f"cannot load PKCS#11 module {path[:200]}: {exc}") from None
    return _LIBRARIES[path]


def _token(uri: Pkcs11Uri) -> Any:
    import pkcs11

    library = _library(uri.module_path)
    selectors: dict[str, Any] = {}
    if uri.token is not None:
        selectors["token_label"] = uri.token
    if "serial" in uri.path:
        selectors["token_serial"] = uri.path["serial"]
    try:
        if "slot-id" in uri.path:
            wanted = int(uri.path["slot-id"])
            for slot in library.get_slots(token_present=True):
                if slot.slot_id == wanted:
                    return slot.get_token()
            raise Pkcs11Error(f"no PKCS#11 slot {wanted} with a token")
        return library.get_token(**selectors)
    except pkcs11.exceptions.NoSuchToken:
        raise Pkcs11Error(f"no PKCS#11 token matches {uri.redacted()}") from None
    except pkcs11.exceptions.MultipleTokensReturned:
        raise Pkcs11Error(
            f"more than one PKCS#11 token matches {uri.redacted()}: add token= or serial="
        ) from None
    except ValueError:
        raise Pkcs11Error(f"slot-id in {uri.redacted()} is not a number") from None


def _open(uri: Pkcs11Uri, *, read_write: bool = False) -> Any:
    """A logged-in session (a context manager). A wrong PIN is a `Pkcs11Error` saying so."""
    import pkcs11

    token = _token(uri)
    pin = uri.pin()
    try:
        return token.open(rw=read_write, user_pin=pin)
    except pkcs11.exceptions.PinIncorrect:
        raise Pkcs11Error(f"wrong PIN for PKCS#11 token {token.label!r}") from None
    except pkcs11.exceptions.PinLocked:
        raise Pkcs11Error(f"the PIN of PKCS#11 token {token.label!r} is locked") from None
    except pkcs11.exceptions.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot log in to PKCS#11 token {token.label!r}: {type(exc).__name__}") from None


def _selectors(uri: Pkcs11Uri) -> dict[str, Any]:
    selectors: dict[str, Any] = {}
    if uri.object is not None:
        selectors["label"] = uri.object
    if uri.key_id is not None:
        selectors["id"] = uri.key_id
    return selectors


def _find_key(session: Any, uri: Pkcs11Uri, object_class: Any) -> Any:
    import pkcs11

    try:
        return session.get_key(object_class=object_class, **_selectors(uri))
    except pkcs11.exceptions.NoSuchKey:
        raise Pkcs11Error(
            f"no {object_class.name.lower().replace('_', ' ')} matches {uri.redacted()}"
        ) from None
    except pkcs11.exceptions.MultipleObjectsReturned:
        raise Pkcs11Error(f"more than one key matches {uri.redacted()}: add id=") from None


def _public_key_from(session: Any, uri: Pkcs11Uri) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    from pkcs11 import KeyType, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key
    from pkcs11.util.rsa import encode_rsa_public_key

    key = _find_key(session, uri, ObjectClass.PUBLIC_KEY)
    if key.key_type == KeyType.EC:
        der = encode_ec_public_key(key)
    elif key.key_type == KeyType.RSA:
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        public = load_der_public_key(_rsa_spki(encode_rsa_public_key(key)))
        assert isinstance(public, rsa.RSAPublicKey)
        return public
    else:
        raise Pkcs11Error(f"key {uri.redacted()} is {key.key_type.name}, not EC or RSA")
    public_key = serialization.load_der_public_key(der)
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise Pkcs11Error(f"key {uri.redacted()} is not a usable EC key")
    return public_key


def _rsa_spki(pkcs1: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(pkcs1) + 1) + b"\x00" + pkcs1
    content = algorithm + bit_string
    return b"\x30" + _der_length(len(content)) + content


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


class Pkcs11Signer:
    """A `trust.keys` signer whose private key stays on the token.

    `sign` signs as cosign's default signer does (ECDSA DER over SHA-256/384/512 by curve, RSA
    PKCS#1 v1.5 SHA-256); `sign_digest` gives the raw mechanism output for other formats.
    """

    def __init__(self, uri: str) -> None:
        self.uri = parse_uri(uri)
        with _open(self.uri) as session:
            self._public_key = _public_key_from(session, self.uri)

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
            hash_type = _CURVE_HASHES.get(key.curve.name, hashes.SHA256)
            return self.sign_ecdsa(payload, hash_type())
        return self.sign_rsa(payload, hashes.SHA256(), pss=False)

    def sign_ecdsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm) -> bytes:
        """ECDSA over `payload` hashed here (CKM_ECDSA takes a digest), as DER."""
        from pkcs11 import Mechanism, ObjectClass

        digest = hashes.Hash(hash_algorithm)
        digest.update(payload)
        raw = self._sign_with(ObjectClass.PRIVATE_KEY, digest.finalize(), Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def sign_rsa(self, payload: bytes, hash_algorithm: hashes.HashAlgorithm, *, pss: bool) -> bytes:
        from pkcs11 import MGF, Mechanism, ObjectClass

        name = hash_algorithm.name.upper().replace("-", "")
        if pss:
            mechanism = getattr(Mechanism, f"{name}_RSA_PKCS_PSS")
            mgf = getattr(MGF, name)
            hash_mechanism = getattr(Mechanism, name)
            parameters = (hash_mechanism, mgf, hash_algorithm.digest_size)
            return self._sign_with(ObjectClass.PRIVATE_KEY, payload, mechanism, parameters)
        return self._sign_with(ObjectClass.PRIVATE_KEY, payload, getattr(Mechanism, f"{name}_RSA_PKCS"))

    def _sign_with(self, object_class: Any, data: bytes, mechanism: Any, parameters: Any = None) -> bytes:
        import pkcs11

        with _open(self.uri) as session:
            key = _find_key(session, self.uri, object_class)
            try:
                if parameters is None:
                    return bytes(key.sign(data, mechanism=mechanism))
                return bytes(key.sign(data, mechanism=mechanism, mechanism_param=parameters))
            except pkcs11.exceptions.PKCS11Error as exc:
                raise Pkcs11Error(
                    f"the token refused to sign with {self.uri.redacted()}: {type(exc).__name__}"
                ) from None


def public_key(uri: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key a URI names (for `verify --key pkcs11:…` and `trust public-key`)."""
    parsed = parse_uri(uri)
    with _open(parsed) as session:
        return _public_key_from(session, parsed)


def generate_key(uri: str, curve: str = "secp256r1") -> ec.EllipticCurvePublicKey:
    """`trust keygen --pkcs11 URI`: create an EC key pair on the token, labelled and identified as
    the URI says (a fresh random id when it gives none); refuse to shadow an existing key."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    parsed = parse_uri(uri)
    if parsed.object is None:
        raise Pkcs11Error("trust keygen --pkcs11 needs object= (the new key's label) in the URI")
    key_id = parsed.key_id if parsed.key_id is not None else os.urandom(8)
    with _open(parsed, read_write=True) as session:
        existing = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, **_label_id(parsed)}))
        if existing:
            raise Pkcs11Error(f"the token already holds a key matching {parsed.redacted()}")
        try:
            parameters = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            public, _private = parameters.generate_keypair(
                store=True,
                label=parsed.object,
                id=key_id,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
        except pkcs11.exceptions.PKCS11Error as exc:
            raise Pkcs11Error(f"the token refused to create the key: {type(exc).__name__}") from None
        loaded = serialization.load_der_public_key(encode_ec_public_key(public))
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    return loaded


def _label_id(uri: Pkcs11Uri) -> dict[Any, Any]:
    from pkcs11 import Attribute

    wanted: dict[Any, Any] = {}
    if uri.object is not None:
        wanted[Attribute.LABEL] = uri.object
    if uri.key_id is not None:
        wanted[Attribute.ID] = uri.key_id
    return wanted


__all__ = [
    "Pkcs11Error",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "generate_key",
    "parse_uri",
    "public_key",
]
