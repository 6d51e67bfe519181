"""Key references in cosign's syntax: where a signing key or a trusted public key lives.

    pkcs11:token=T;object=K?module-path=/usr/lib/softhsm/libsofthsm2.so   a key on a PKCS#11 token
    awskms:///alias/release                                                a key in AWS KMS
    env://VAR                                                              PEM in an environment variable
    PATH                                                                   a key file (cosign or PEM)

The same reference works for `trust sign --key` (a signer), `trust verify --key`, a policy's
`cosign-keys` and `trust public-key --key` (the public key: fetched from the token or the KMS,
derived from a private key, or read from a public key file).

Adding a provider: write `signer(uri) -> Signer` and `public_key(uri) -> PublicKey` (see
`trust.keys.kms` for AWS) and register both under the URI prefix in `PROVIDERS`. `gcpkms://`,
`azurekms://` and `hashivault://` are reserved: they are refused with a clear message until a
provider is registered for them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pull.errors import UsageError
from pull.records import dataclass

if TYPE_CHECKING:
    from trust.keys.keyfiles import PrivateKey, PublicKey, Signer


@dataclass(frozen=True)
class Provider:
    signer: Callable[[str], Signer]
    public_key: Callable[[str], PublicKey]


def _pkcs11_signer(uri: str) -> Signer:
    from trust.keys.pkcs11 import Pkcs11Signer

    return Pkcs11Signer(uri)


def _pkcs11_public_key(uri: str) -> PublicKey:
    from trust.keys.pkcs11 import public_key

    return public_key(uri)


def _aws_signer(uri: str) -> Signer:
    from trust.keys.kms import AwsKmsSigner

    return AwsKmsSigner(uri)


def _aws_public_key(uri: str) -> PublicKey:
    from trust.keys.kms import public_key

    return public_key(uri)


PROVIDERS: dict[str, Provider] = {
    "pkcs11:": Provider(_pkcs11_signer, _pkcs11_public_key),
    "awskms://": Provider(_aws_signer, _aws_public_key),
}
"""URI prefix -> how to sign with and read the public key of the keys it names."""
RESERVED = ("gcpkms://", "azurekms://", "hashivault://")
ENV_PREFIX = "env://"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_reference(text: str) -> bool:
    """Whether `text` names a key by URI (not a file path)."""
    return text.startswith((*PROVIDERS, *RESERVED, ENV_PREFIX))


def _provider(reference: str) -> Provider | None:
    for prefix in RESERVED:
        if reference.startswith(prefix):
            raise UsageError(
                f"{prefix} keys are not supported yet: use pkcs11:, awskms://, env:// or a key file "
                "(docs/signing.md says how to add a KMS provider)"
            )
    for prefix, provider in PROVIDERS.items():
        if reference.startswith(prefix):
            return provider
    return None


def _env_pem(reference: str) -> tuple[str, bytes]:
    name = reference[len(ENV_PREFIX) :]
    if not _ENV_NAME.match(name):
        raise UsageError(f"{reference[:100]!r}: env:// needs an environment variable name")
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"environment variable {name} (from {reference}) is not set or empty")
    return name, value.encode()


def signer_for(reference: str) -> Signer:
    """A signer for `--key`: a provider URI, `env://VAR` holding a private key PEM, or a key file."""
    from trust.keys.keyfiles import KeySigner

    provider = _provider(reference)
    if provider is not None:
        return provider.signer(reference)
    return KeySigner(private_key_for(reference))


def private_key_for(reference: str) -> PrivateKey:
    """A key held in memory: `env://VAR` holding a private key PEM, or a key file (cosign or PEM)."""
    from trust.keys.keyfiles import get_password, load_private_key, load_private_key_file

    if reference.startswith(ENV_PREFIX):
        name, pem = _env_pem(reference)
        return load_private_key(pem, lambda: get_password(confirm=False, purpose=name), source=name)
    if not Path(reference).exists():
        raise UsageError(f"key file {reference} does not exist")
    return load_private_key_file(reference, lambda: get_password(confirm=False, purpose=reference))


def is_in_memory(reference: str) -> bool:
    """Whether the key is read into this process (a file or env://), not used through a provider."""
    return not reference.startswith((*PROVIDERS, *RESERVED))


def public_key_for(reference: str) -> PublicKey:
    """The public key a reference names: from the token or KMS, from `env://VAR` or a file holding a
    public key (or a private key, whose public half is taken)."""
    from trust.keys.keyfiles import check_public_key, load_public_key, read_key_file

    provider = _provider(reference)
    if provider is not None:
        return check_public_key(provider.public_key(reference), reference)
    if reference.startswith(ENV_PREFIX):
        name, pem = _env_pem(reference)
        source = name
    else:
        pem = read_key_file(reference)
        source = reference
    if b"PRIVATE KEY-----" in pem:  # a private key names its public half
        return signer_for(reference).public_key
    return load_public_key(pem, source=source)  # else the file's error, as `verify --key` always said
