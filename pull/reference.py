"""Docker/OCI image references: parsing, validation and Docker Hub normalisation.

    busybox                         -> docker.io/library/busybox:latest
    host:5000/team/app:v1           -> registry host:5000, repository team/app, tag v1
    host/app:v1@sha256:<hex>        -> the digest wins; the tag is kept only for display

The grammar follows distribution/reference: lowercase path components separated by `/`,
an optional `:tag` and an optional `@algorithm:hex` digest.

An OCI image layout on disk is named as skopeo names it, `oci:DIR[:tag][@digest]` (DIR may not
contain `:`; a relative DIR is made absolute). Its `registry` (and `api_host`) is `oci:/abs/DIR`,
its `repository` is empty and its `name` is `oci:/abs/DIR`: `pull.clients` routes that "host" to
a `pull.layout.LayoutClient`, so layouts go through the same verifying code as registries.
"""

from __future__ import annotations

import os
import re

from pull.digest import Digest
from pull.errors import InvalidReference
from pull.records import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_MAX_NAME = 255
LAYOUT_PREFIX = "oci:"
"""References starting with this name an OCI image layout directory, not a registry."""
_MAX_LAYOUT_PATH = 4096


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference. `tag` and `digest` may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse `text`, applying Docker normalisation. Raises `InvalidReference` (exit 2)."""
        original = text
        if not text or text != text.strip():
            raise InvalidReference(f"invalid image reference {original!r}: empty or surrounded by spaces")
        if text.startswith(LAYOUT_PREFIX):
            return _parse_layout(text)
        digest: Digest | None = None
        if "@" in text:
            text, _, digest_text = text.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except InvalidReference as exc:
                raise InvalidReference(f"invalid image reference {original!r}: {exc}") from None
        tag: str | None = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise InvalidReference(f"invalid image reference {original!r}: bad tag {tag!r}")
        registry, repository = _split_registry(text)
        if not _HOST.fullmatch(registry):
            raise InvalidReference(f"invalid image reference {original!r}: bad registry host {registry!r}")
        if not repository or not all(_COMPONENT.fullmatch(c) for c in repository.split("/")):
            hint = " (repository names must be lowercase)" if repository != repository.lower() else ""
            raise InvalidReference(f"invalid image reference {original!r}: bad repository name{hint}")
        if len(registry) + 1 + len(repository) > _MAX_NAME:
            raise InvalidReference(f"invalid image reference {original!r}: name longer than {_MAX_NAME}")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """`registry/repository`, the name a signature's docker-reference is compared with.

        For a layout, `oci:/abs/DIR`.
        """
        return f"{self.registry}/{self.repository}" if self.repository else self.registry

    @property
    def is_layout(self) -> bool:
        """Whether this names an OCI image layout directory (`oci:DIR…`) rather than a registry."""
        return self.registry.startswith(LAYOUT_PREFIX)

    @property
    def api_host(self) -> str:
        """The host to contact: Docker Hub's API lives on a different host than its name."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    @property
    def identifier(self) -> str:
        """What goes after `/manifests/`: the digest when known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None
        return self.tag

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _parse_layout(text: str) -> Reference:
    """`oci:DIR[:tag][@digest]` → a layout reference (see the module docstring)."""
    original = text
    rest = text[len(LAYOUT_PREFIX) :]
    digest: Digest | None = None
    if "@" in rest:
        rest, _, digest_text = rest.rpartition("@")
        try:
            digest = Digest.parse(digest_text)
        except InvalidReference as exc:
            raise InvalidReference(f"invalid layout reference {original[:200]!r}: {exc}") from None
    path, sep, tag_text = rest.partition(":")
    tag = tag_text if sep else None
    if tag is not None and not _TAG.fullmatch(tag):
        raise InvalidReference(f"invalid layout reference {original[:200]!r}: bad tag {tag[:100]!r}")
    if not path or len(path) > _MAX_LAYOUT_PATH or not path.isprintable() or path != path.strip():
        raise InvalidReference(
            f"invalid layout reference {original[:200]!r}: expected oci:DIR[:tag][@digest] "
            "with a directory path (no ':' in it)"
        )
    absolute = os.path.normpath(os.path.abspath(path))
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(LAYOUT_PREFIX + absolute, "", tag, digest)


def is_short_name(text: str) -> bool:
    """Whether a reference as typed has no registry part (`busybox`, `team/app:v1`): registries.conf
    may qualify it (`pull.registries_conf`)."""
    return not text.startswith(LAYOUT_PREFIX) and not has_registry(text)


def has_registry(text: str) -> bool:
    """Whether a reference's first component is a registry host, as `Reference.parse` decides."""
    first, sep, _ = text.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost" or first.startswith("["))


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if first in ("index.docker.io", DOCKER_HUB) and sep:
        return DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    if has_registry(name):
        return first, rest
    if "/" not in name:
        return DOCKER_HUB, f"library/{name}"
    return DOCKER_HUB, name
