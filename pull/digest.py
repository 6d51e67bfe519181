"""Content digests (`algorithm:hex`), validated before they are used anywhere near a path."""

from __future__ import annotations

import hashlib
import re

from pull.errors import InvalidReference
from pull.records import dataclass

# Only algorithms registered in the OCI image spec, with their exact hex lengths.
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated content digest such as `sha256:e3b0…`. Construct with `Digest.parse`."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        length = _HEX_LENGTH.get(self.algorithm)
        if length is None:
            raise InvalidReference(f"unsupported digest algorithm {self.algorithm!r} (use sha256 or sha512)")
        if len(self.hex) != length or not _HEX.fullmatch(self.hex):
            raise InvalidReference(
                f"malformed {self.algorithm} digest: expected {length} lowercase hex characters"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hexpart = text.partition(":")
        if not sep:
            raise InvalidReference(f"malformed digest {text[:80]!r}: expected 'sha256:<64 hex>'")
        return cls(algorithm, hexpart)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    @property
    def encoded(self) -> str:
        """`sha256-<hex>`: the form cosign tags (`.sig`, `.att`) and file names use."""
        return f"{self.algorithm}-{self.hex}"

    @property
    def referrers_tag(self) -> str:
        """The OCI referrers tag schema: algorithm cut to 32 characters, `-`, encoded part cut to 64.

        Tags are at most 128 characters; a sha512 digest's 128 hex characters do not fit whole.
        For sha256 this is `encoded`.
        """
        return f"{self.algorithm[:32]}-{self.hex[:64]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
