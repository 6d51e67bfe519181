"""Cosign key files, passwords, signers (trust/keys.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from pull.errors import UsageError
from trust.errors import KeyLoadError, WrongPassword
from trust.keys import keyfiles as keys
from trust.keys.keyfiles import (
    COSIGN_PRIVATE_KEY_PEM,
    SIGSTORE_PRIVATE_KEY_PEM,
    KeySigner,
    decrypt_envelope,
    encrypt_private_key,
    generate_keypair,
    get_password,
    load_private_key,
    load_private_key_file,
    load_public_key,
    signer_from_uri,
    verify_bytes,
    write_keypair,
)

EXAMPLE_KEYS = Path(__file__).resolve().parent.parent / "keys-example"

# go-securesystemslib encrypted/encrypted_test.go (Apache-2.0), used as interop data: envelopes
# written by the Go code cosign uses, passphrase "supersecret".
GO_LEGACY_ENVELOPE = (
    b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},'
    b'"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},'
    b'"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}'
)
GO_STANDARD_ENVELOPE = (
    b'{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},'
    b'"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},'
    b'"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}'
)
GO_OWASP_ENVELOPE = (
    b'{"kdf":{"name":"scrypt","params":{"N":131072,"r":8,"p":1},'
    b'"salt":"m38E3kouJTtiheLQN22NQ8DTito5hrjpUIskqcd375k="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"Y6PM13yA+o44pE/W1ZBwczeGnTV/m9Zc"},'
    b'"ciphertext":"6H8sqj1K6B6yDjtH5AQ6lbFigg/C2yDDJc4rYJ79w9aVPImFIPI="}'
)


def _pem_body(pem: bytes) -> bytes:
    lines = pem.decode().strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def _wrap(pem_type: str, body: bytes) -> bytes:
    return keys._pem_encode(pem_type, body)


def _plain_pem(private_key: keys.PrivateKey | ed448.Ed448PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in keys.PASSWORD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


# --- the encrypted format ----------------------------------------------------------------------


def test_generated_key_has_cosigns_exact_layout() -> None:
    private_pem, public_pem = generate_keypair(b"pw")

    text = private_pem.decode()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert text.endswith("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in text.splitlines())
    body = _pem_body(private_pem)
    # Go's json.Marshal of go-securesystemslib's struct: this order, compact, std base64.
    assert re.fullmatch(
        rb'\{"kdf":\{"name":"scrypt","params":\{"N":65536,"r":8,"p":1\},"salt":"[A-Za-z0-9+/]{43}="\},'
        rb'"cipher":\{"name":"nacl/secretbox","nonce":"[A-Za-z0-9+/]{32}"\},"ciphertext":"[A-Za-z0-9+/=]+"\}',
        body,
    ), body
    doc = json.loads(body)
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24

    # The plaintext is the PKCS#8 DER of an ECDSA P-256 key matching the public key file.
    der = decrypt_envelope(body, b"pw")
    inner = serialization.load_der_private_key(der, None)
    assert isinstance(inner, ec.EllipticCurvePrivateKey)
    assert inner.curve.name == "secp256r1"
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert _spki(load_public_key(public_pem)) == _spki(inner.public_key())


def _spki(key: keys.PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_keygen_load_round_trip_and_sign() -> None:
    private_pem, public_pem = generate_keypair(b"correct horse")
    private_key = load_private_key(private_pem, b"correct horse", source="cosign.key")
    signer = KeySigner(private_key)
    signature = signer.sign(b"payload")
    assert verify_bytes(load_public_key(public_pem), b"payload", signature)
    assert not verify_bytes(load_public_key(public_pem), b"payloaX", signature)
    assert signer.public_key_pem() == public_pem


def test_empty_password_is_allowed() -> None:
    private_pem, _ = generate_keypair(b"")
    assert isinstance(load_private_key(private_pem, b""), ec.EllipticCurvePrivateKey)
    assert isinstance(load_private_key(private_pem, None), ec.EllipticCurvePrivateKey)


def test_wrong_password_is_one_line_usage_error() -> None:
    private_pem, _ = generate_keypair(b"right")
    with pytest.raises(WrongPassword) as info:
        load_private_key(private_pem, b"wrong", source="release/cosign.key")
    assert str(info.value) == "wrong password for cosign key release/cosign.key"
    assert isinstance(info.value, KeyLoadError) and isinstance(info.value, UsageError)
    assert "TRUST_PASSWORD" in info.value.diagnostics()


def test_password_callable_is_only_asked_for_encrypted_keys() -> None:
    asked: list[bool] = []

    def ask() -> bytes:
        asked.append(True)
        return b"pw"

    plain = _plain_pem(ec.generate_private_key(ec.SECP256R1()))
    load_private_key(plain, ask)
    assert asked == []
    encrypted, _ = generate_keypair(b"pw")
    load_private_key(encrypted, ask)
    assert asked == [True]
    assert keys.is_encrypted_key(encrypted) and not keys.is_encrypted_key(plain)


def test_cosign_v1_pem_type_is_accepted() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_private_key(private_key, b"pw", pem_type=COSIGN_PRIVATE_KEY_PEM)
    assert pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    loaded = load_private_key(pem, b"pw")
    assert _spki(loaded.public_key()) == _spki(private_key.public_key())


@pytest.mark.parametrize(
    ("envelope", "plaintext"),
    [
        (GO_LEGACY_ENVELOPE, b"reallyimportant"),
        (GO_STANDARD_ENVELOPE, b'"cmVhbGx5aW1wb3J0YW50"'),  # json.Marshal([]byte("reallyimportant"))
        (GO_OWASP_ENVELOPE, b'"cmVhbGx5aW1wb3J0YW50"'),
    ],
)
def test_envelopes_written_by_go_securesystemslib_decrypt(envelope: bytes, plaintext: bytes) -> None:
    assert decrypt_envelope(envelope, b"supersecret") == plaintext
    with pytest.raises(WrongPassword):
        decrypt_envelope(envelope, b"supersecreT")


def _envelope_with(n: int, r: int = 8, p: int = 1) -> bytes:
    doc = json.loads(GO_LEGACY_ENVELOPE)
    doc["kdf"]["params"] = {"N": n, "r": r, "p": p}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("n", "r", "p"), [(1 << 20, 8, 1), (65536, 1024, 1), (65536, 8, 64), (16, 8, 1)])
def test_hostile_scrypt_parameters_are_refused_before_deriving(n: int, r: int, p: int) -> None:
    pem = _wrap(SIGSTORE_PRIVATE_KEY_PEM, _envelope_with(n, r, p))
    started = time.monotonic()
    with pytest.raises(KeyLoadError, match=f"unsupported scrypt parameters N={n} r={r} p={p}") as info:
        load_private_key(pem, b"supersecret", source="evil.key")
    assert not isinstance(info.value, WrongPassword)
    assert time.monotonic() - started < 0.05  # no scrypt was run


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["kdf"].update(name="argon2"), "unsupported KDF"),
        (lambda d: d["cipher"].update(name="aes-gcm"), "unsupported cipher"),
        (lambda d: d["cipher"].update(nonce=base64.b64encode(b"x" * 12).decode()), "nonce must be 24"),
        (lambda d: d.update(ciphertext="not base64!"), "'ciphertext' is not base64"),
        (lambda d: d["kdf"]["params"].update(N="65536"), "'N' must be a int"),
        (lambda d: d.pop("cipher"), "missing 'cipher'"),
    ],
)
def test_malformed_envelopes_are_refused(mutate: object, message: str) -> None:
    doc = json.loads(GO_LEGACY_ENVELOPE)
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(KeyLoadError, match=message):
        load_private_key(_wrap(COSIGN_PRIVATE_KEY_PEM, json.dumps(doc).encode()), b"supersecret")


def test_tampered_ciphertext_fails_like_a_wrong_password() -> None:
    private_pem, _ = generate_keypair(b"pw")
    doc = json.loads(_pem_body(private_pem))
    ciphertext = bytearray(base64.b64decode(doc["ciphertext"]))
    ciphertext[-1] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
    with pytest.raises(WrongPassword):
        load_private_key(_wrap(SIGSTORE_PRIVATE_KEY_PEM, json.dumps(doc).encode()), b"pw")


def test_duplicate_json_keys_in_envelope_are_refused() -> None:
    body = GO_LEGACY_ENVELOPE.replace(b'"ciphertext"', b'"cipher":{},"ciphertext"')
    with pytest.raises(KeyLoadError, match="not JSON"):
        decrypt_envelope(body, b"supersecret")


# --- plain keys and their checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "hash_type"),
    [(ec.SECP256R1(), hashes.SHA256), (ec.SECP384R1(), hashes.SHA384), (ec.SECP521R1(), hashes.SHA512)],
)
def test_plain_ec_keys_sign_with_the_curves_hash(curve: ec.EllipticCurve, hash_type: type) -> None:
    private_key = ec.generate_private_key(curve)
    for pem in (
        _plain_pem(private_key),
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    ):
        signer = KeySigner(load_private_key(pem))
        signature = signer.sign(b"data")
        private_key.public_key().verify(signature, b"data", ec.ECDSA(hash_type()))  # raises if wrong
        assert verify_bytes(private_key.public_key(), b"data", signature)


def test_p384_verification_also_accepts_sha256_signatures_of_older_cosign() -> None:
    private_key = ec.generate_private_key(ec.SECP384R1())
    legacy = private_key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    assert verify_bytes(private_key.public_key(), b"data", legacy)
    assert not verify_bytes(private_key.public_key(), b"other", legacy)


def test_p256_does_not_accept_other_hashes() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    signature = private_key.sign(b"data", ec.ECDSA(hashes.SHA384()))
    assert not verify_bytes(private_key.public_key(), b"data", signature)


def test_rsa_2048_signs_pkcs1v15_sha256() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = KeySigner(load_private_key(_plain_pem(private_key)))
    signature = signer.sign(b"data")
    private_key.public_key().verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    pss = private_key.sign(
        b"data", padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()
    )
    assert not verify_bytes(private_key.public_key(), b"data", pss)


def test_ed25519_signs_the_raw_payload() -> None:
    private_key = ed25519.Ed25519PrivateKey.generate()
    signature = KeySigner(load_private_key(_plain_pem(private_key))).sign(b"data")
    private_key.public_key().verify(signature, b"data")
    assert verify_bytes(private_key.public_key(), b"data", signature)


def test_rsa_1024_is_refused_with_a_clear_message() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyLoadError, match=r"key weak\.pem is RSA-1024; RSA keys must be 2048 to 8192 bits"):
        load_private_key(_plain_pem(private_key), source="weak.pem")
    public_pem = keys.public_key_pem(private_key.public_key())
    with pytest.raises(KeyLoadError, match="RSA-1024"):
        load_public_key(public_pem, source="weak.pub")
    with pytest.raises(KeyLoadError, match="RSA-1024"):
        encrypt_private_key(private_key, b"pw")


def test_other_curves_and_key_types_are_refused() -> None:
    with pytest.raises(KeyLoadError, match="curve secp256k1; only P-256, P-384 and P-521"):
        load_private_key(_plain_pem(ec.generate_private_key(ec.SECP256K1())), source="k1.pem")
    with pytest.raises(KeyLoadError, match="unsupported type Ed448"):
        load_private_key(_plain_pem(ed448.Ed448PrivateKey.generate()), source="ed448.pem")


def test_encrypted_pkcs8_is_refused_with_advice() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyLoadError, match="encrypted PKCS#8") as info:
        load_private_key(pem, b"pw")
    assert "cosign import-key-pair" in info.value.diagnostics()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello", "is not a PEM key file"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is malformed"),
        (_wrap(SIGSTORE_PRIVATE_KEY_PEM, b"abc").replace(b"YWJj", b"YW!j"), "not valid base64"),
        (b"x" * (keys.MAX_KEY_FILE_BYTES + 1), "larger than"),
    ],
)  # fmt: skip
def test_garbage_private_keys_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(KeyLoadError, match=message):
        load_private_key(data, b"")


def test_public_key_loader_refuses_private_keys_and_garbage() -> None:
    private_pem, public_pem = generate_keypair(b"")
    with pytest.raises(KeyLoadError, match="not a PUBLIC KEY"):
        load_public_key(private_pem)
    with pytest.raises(KeyLoadError, match="malformed"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert isinstance(load_public_key(public_pem), ec.EllipticCurvePublicKey)


def test_unreadable_key_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="cannot read key"):
        load_private_key_file(tmp_path / "missing.key")


def test_write_keypair_is_private_and_never_overwrites(tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair(b"")
    key_path, pub_path = write_keypair(tmp_path / "cosign", private_pem, public_pem)
    assert (key_path.name, pub_path.name) == ("cosign.key", "cosign.pub")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert key_path.read_bytes() == private_pem
    with pytest.raises(UsageError, match="already exists"):
        write_keypair(tmp_path / "cosign", private_pem, public_pem)


def test_example_key_pair_opens_with_the_documented_password() -> None:
    private_key = load_private_key_file(EXAMPLE_KEYS / "cosign.key", b"trust-example")
    public_key = keys.load_public_key_file(EXAMPLE_KEYS / "cosign.pub")
    assert _spki(private_key.public_key()) == _spki(public_key)
    assert "trust-example" in (EXAMPLE_KEYS / "README.md").read_text()


# --- passwords ---------------------------------------------------------------------------------


def test_password_env_order_and_empty_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keys.password_from_env() is None
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert keys.password_from_env() == b""
    monkeypatch.setenv("TRUST_PASSWORD", "tr\u00fcst")
    assert keys.password_from_env() == "tr\u00fcst".encode()
    assert get_password(confirm=True, prompt=lambda _: pytest.fail("must not prompt")) == "trüst".encode()


def test_prompt_with_confirmation() -> None:
    answers = iter(["one", "one"])
    assert get_password(confirm=True, prompt=lambda _: next(answers)) == b"one"
    answers = iter(["one", "two"])
    with pytest.raises(KeyLoadError, match="passwords do not match"):
        get_password(confirm=True, prompt=lambda _: next(answers))
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return ""

    assert get_password(confirm=False, prompt=prompt) == b""
    assert asked == ["Enter password for private key: "]


def test_no_terminal_and_no_env_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("secret\n"))
    with pytest.raises(KeyLoadError, match="set TRUST_PASSWORD"):
        get_password(confirm=False)


# --- securesystemslib signer URIs --------------------------------------------------------------


def test_file2_uri_signer_signs_like_cosign(tmp_path: Path) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(_plain_pem(private_key))
    public_pem = keys.public_key_pem(private_key.public_key())

    signer = signer_from_uri(f"file2:{path}", public_pem)
    signature = signer.sign(b"payload")
    private_key.public_key().verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))
    assert signer.public_key_pem() == public_pem


def test_file2_uri_signer_with_rsa_uses_pkcs1v15(tmp_path: Path) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(_plain_pem(private_key))
    signer = signer_from_uri(f"file2:{path}", keys.public_key_pem(private_key.public_key()))
    signature = signer.sign(b"payload")
    private_key.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())


def test_uri_signer_errors_are_key_load_errors(tmp_path: Path) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(_plain_pem(private_key))
    other_public = keys.public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyLoadError, match="cannot use signer"):
        signer_from_uri(f"file2:{path}", other_public)  # key mismatch
    with pytest.raises(KeyLoadError, match="cannot use signer"):
        signer_from_uri("nosuchscheme:whatever", other_public)
    with pytest.raises(KeyLoadError, match="cannot use signer"):
        signer_from_uri(f"file2:{tmp_path / 'missing.pem'}", other_public)
