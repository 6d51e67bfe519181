"""A policy authority of the cosign kind: signatures made with one of a set of public keys."""

from __future__ import annotations

from dataclasses import dataclass

from trust.keys.keyfiles import TrustedKey


@dataclass(frozen=True)
class CosignKeyAuthority:
    """Signatures by one of `keys` (cosign simple-signing); with `rekor_keys`, a Rekor SET by one
    of them is required as well."""

    name: str
    keys: tuple[TrustedKey, ...]
    rekor_keys: tuple[TrustedKey, ...] = ()
    line: int = 0

    @property
    def kind(self) -> str:
        return "cosign-keys"
