"""Keys and signers shared by the signature families: cosign key files, public keys, signers.

What other packages may use is listed in `__all__`; `keyfiles` holds the implementation (the
cosign key-file format, password handling, the `Signer` implementations); `references` resolves
key references in cosign's syntax (`pkcs11:` in `pkcs11`, `awskms://` in `kms`, `env://`, files).
"""

from trust.keys.keyfiles import (
    KeySigner,
    PrivateKey,
    PublicKey,
    Signer,
    TrustedKey,
    URISigner,
    check_public_key,
    fingerprint,
    generate_keypair,
    get_password,
    load_private_key_file,
    load_public_key,
    load_public_key_file,
    public_key_pem,
    read_key_file,
    signer_from_uri,
    verify_bytes,
    write_keypair,
)
from trust.keys.references import is_reference, public_key_for, signer_for

__all__ = [
    "KeySigner",
    "PrivateKey",
    "PublicKey",
    "Signer",
    "TrustedKey",
    "URISigner",
    "check_public_key",
    "fingerprint",
    "generate_keypair",
    "get_password",
    "is_reference",
    "load_private_key_file",
    "load_public_key",
    "load_public_key_file",
    "public_key_for",
    "public_key_pem",
    "read_key_file",
    "signer_for",
    "signer_from_uri",
    "verify_bytes",
    "write_keypair",
]
