"""The one object `run/` accepts: an image that admission let through, with everything verified.

`run/` never sees a string reference. It gets an `AdmittedImage`, built only by
`policy.admission.admit` after the manifest, config and blobs were verified into the content store
and the policy allowed the digest. Layers are unpacked from the store by digest; their diff_ids are
recomputed while unpacking, within the `ImageLimits` of the policy rule that admitted the image.
"""

from __future__ import annotations

from typing import Any

from pull.digest import Digest
from pull.manifest import Descriptor, ImageConfig
from pull.records import dataclass, field

_GiB = 1 << 30


@dataclass(frozen=True)
class ImageLimits:
    """What unpacking one image may cost, whatever its signatures say: a signed image can still be
    a bomb (one small gzip layer of zeros listed hundreds of times). Set per scope in the policy
    (`limits: {max-layers, max-unpacked-bytes, max-files}`); the defaults let any real image through.
    """

    max_layers: int = 128
    """docker and containerd refuse images with more than 127-128 layers."""
    max_unpacked_bytes: int = 64 * _GiB
    """Uncompressed bytes of all the layers unpacked for the image, together."""
    max_files: int = 2_000_000
    """Tar entries of all the layers unpacked for the image, together."""

    def __post_init__(self) -> None:
        for name in ("max_layers", "max_unpacked_bytes", "max_files"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"ImageLimits.{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class RuntimePermissions:
    """What a container of an image this rule admits may ask the runtime for, beyond the defaults.
    Set per scope in the policy (`runtime: {allow-privileged: true}`); the defaults allow nothing
    extra, so `trust run --privileged` is refused (exit 3) unless the matching rule says so.
    """

    allow_privileged: bool = False
    """`--privileged`: every capability, no seccomp filter, no masked or read-only /proc paths."""


@dataclass(frozen=True)
class Decision:
    """Why the image was admitted (or, in audit mode, admitted despite failing)."""

    rule: str
    """The policy scope that matched (or "default")."""
    mode: str
    """enforce | audit"""
    allowed: bool
    reasons: tuple[str, ...] = ()
    authorities: tuple[dict[str, Any], ...] = ()
    """Each authority's outcome, as recorded in the decision log."""
    policy: str | None = None
    """Path of the policy file that decided."""
    reused_from: str | None = None
    """When this is a reused decision (`policy.reuse`): the time the reused decision was made."""


@dataclass(frozen=True)
class AdmittedImage:
    repository: str
    """`registry/repository`, e.g. `127.0.0.1:5000/demo/hello`."""
    manifest_digest: Digest
    """The platform image manifest that runs (what the rootfs is built from)."""
    config_digest: Digest
    config: ImageConfig
    layers: tuple[Descriptor, ...]
    """Compressed layer descriptors, bottom first; their blobs are in the content store."""
    decision: Decision
    index_digest: Digest | None = None
    tag: str | None = field(default=None, compare=False)
    """Only for display: the tag the user typed next to the digest, if any."""
    limits: ImageLimits = field(default_factory=ImageLimits)
    """From the policy rule that admitted the image: what unpacking it may cost."""
    runtime: RuntimePermissions = field(default_factory=RuntimePermissions)
    """From the same rule: what its containers may ask the runtime for (`--privileged`)."""
    mirrors: tuple[str, ...] = field(default=(), compare=False)
    """Only for display: registries.conf mirrors that served bytes of this pull (none when nothing
    was pulled, or all came from the source)."""

    @property
    def diff_ids(self) -> tuple[Digest, ...]:
        return self.config.diff_ids

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.manifest_digest}"
