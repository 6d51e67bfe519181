"""Rule scopes: which images a policy rule applies to, and which of several matching rules wins.

Grammar (after Docker Hub normalisation; see docs/policy.md):

    scope      = host [ ":" port ] [ "/" component { "/" component } ]
    host       = a registry host name, IPv4 address or [IPv6] literal
               | "*." domain                 any host with one or more labels in front of domain
    port       = 1-65535 | "*"               "*" = any port, or none
    component  = a repository path component (lowercase, as in image names) | "*"   exactly one component

A scope matches a repository when its host and port match and its path is a prefix of the
repository's path on component boundaries: `r.example.com/team` covers `team/app` and `team/x/y`
but never `teamster`. A host without a port matches only references without a port.

A scope whose first component is not a host (no `.`, no `:`, not `localhost`) names Docker Hub and
is normalised as `docker pull` would: `busybox` is `docker.io/library/busybox`.

Refused, with a hint: tags and digests (a rule is about repositories, not versions), `**`, a `*`
inside a component or host label (`te*`, `reg*.example.com`), URL schemes, empty components.

OCI image layouts (`oci:DIR[:tag][@digest]` references) are matched only by layout scopes, and
layout scopes match nothing else:

    layout     = "oci:" absolute-directory       the layout at that directory, or any layout below it

`oci:/srv/images` covers `oci:/srv/images:v1` and `oci:/srv/images/app:v1` but not
`oci:/srv/images2`; `oci:/` covers every layout. Paths are compared after normalisation (`.`,
`..`, repeated `/`), without resolving symlinks; relative paths and `*` are refused.

Precedence ("most specific wins") is a total order, highest first:

    1. the scope names exactly the repository (no wildcard)
    2. more path components
    3. fewer wildcards (`*` in the host, port and path each count one)
    4. more literal host labels (`*.prod.example.com` before `*.example.com`)
    5. earlier in the file
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from policy.errors import PolicyError
from pull.errors import InvalidReference
from pull.records import dataclass
from pull.reference import DOCKER_HUB, LAYOUT_PREFIX, Reference

WILDCARD = "*"

_Bad = Callable[[str, str], PolicyError]

_LEGACY_DOCKER_HUB = "index.docker.io"
_PLACEHOLDER = "x"
"""Stands in for a `*` when the literal parts of a scope are checked with `Reference.parse`."""


@dataclass(frozen=True)
class Scope:
    """A parsed, normalised scope. `text` is what the policy file says, `canonical` what it means."""

    text: str
    host: str
    """Lowercase host; for a wildcard host, the domain after `*.`."""
    host_wildcard: bool
    port: str | None
    """None (no port), a decimal port without leading zeros, or `*`."""
    path: tuple[str, ...]
    """Repository path components; `*` stands for any one component. For a layout scope, directories."""
    layout: bool = False
    """A layout scope (`oci:/DIR`): `path` holds the directory's components, `host` is empty."""

    @property
    def canonical(self) -> str:
        if self.layout:
            return LAYOUT_PREFIX + "/" + "/".join(self.path)
        text = f"*.{self.host}" if self.host_wildcard else self.host
        if self.port is not None:
            text += f":{self.port}"
        if self.path:
            text += "/" + "/".join(self.path)
        return text

    @property
    def wildcards(self) -> int:
        return int(self.host_wildcard) + int(self.port == WILDCARD) + self.path.count(WILDCARD)

    def matches(self, reference: Reference) -> bool:
        if self.layout or reference.is_layout:
            return self.layout and reference.is_layout and _within(self.path, _layout_components(reference))
        host, port = split_registry(reference.registry)
        if self.host_wildcard:
            if host.startswith("[") or not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        if self.port is None:
            if port is not None:
                return False
        elif self.port != WILDCARD and (port is None or int(port) != int(self.port)):
            return False
        components = reference.repository.split("/")
        if len(self.path) > len(components):
            return False
        return all(mine in (WILDCARD, theirs) for mine, theirs in zip(self.path, components, strict=False))

    def is_exact_for(self, reference: Reference) -> bool:
        """Whether this scope names exactly `reference`'s repository (rank 1 of the precedence)."""
        if self.layout:
            return self.matches(reference) and self.path == _layout_components(reference)
        return (
            self.wildcards == 0
            and self.matches(reference)
            and len(self.path) == len(reference.repository.split("/"))
        )

    def specificity(self, reference: Reference) -> tuple[int, int, int, int]:
        """Sort key for a scope that matches `reference`: larger is more specific.

        File order (rank 5) is left to the caller, which knows the rule's position.
        """
        literal_labels = len(self.host.split("."))
        return (int(self.is_exact_for(reference)), len(self.path), -self.wildcards, literal_labels)

    def __str__(self) -> str:
        return self.canonical


def _layout_components(reference: Reference) -> tuple[str, ...]:
    return tuple(c for c in reference.registry[len(LAYOUT_PREFIX) :].split("/") if c)


def _within(directory: tuple[str, ...], components: tuple[str, ...]) -> bool:
    return components[: len(directory)] == directory


def _parse_layout_scope(text: str, bad: _Bad) -> Scope:
    path = text[len(LAYOUT_PREFIX) :]
    if not path.startswith("/"):
        raise bad("names a layout by a relative path", f"write the absolute directory, e.g. 'oci:/{path}'")
    if WILDCARD in path or ":" in path or "@" in path:
        raise bad(
            "has '*', a tag or a digest in a layout path",
            "write the directory only; 'oci:/' covers every layout",
        )
    normalised = posixpath.normpath(path)
    components = tuple(c for c in normalised.split("/") if c)
    return Scope(text=text, host="", host_wildcard=False, port=None, path=components, layout=True)


def split_registry(registry: str) -> tuple[str, str | None]:
    """`host[:port]` (host lowercased, IPv6 in brackets) as (host, port or None)."""
    if registry.startswith("["):
        end = registry.find("]")
        if end < 0:
            return registry.lower(), None
        rest = registry[end + 1 :]
        return registry[: end + 1].lower(), rest[1:] if rest.startswith(":") else None
    host, sep, port = registry.partition(":")
    return host.lower(), port if sep else None


def parse_scope(text: str) -> Scope:
    """Parse and normalise a scope. Raises `PolicyError` without a location (the loader adds it)."""

    def bad(problem: str, hint: str) -> PolicyError:
        return PolicyError(f"scope {text!r} {problem}", hint)

    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise bad(
            "is empty or contains spaces",
            "write a registry, namespace or repository, e.g. 'registry.example.com/team'",
        )
    if text.startswith(LAYOUT_PREFIX):
        return _parse_layout_scope(text, bad)
    if "://" in text:
        after = text.split("://", 1)[1]
        raise bad("has a URL scheme", f"write the registry host without it, e.g. {after!r}")
    if "@" in text:
        raise bad(
            "names a digest; scopes name registries and repositories, not images",
            f"write {text.split('@', 1)[0]!r} and pin digests in the image reference instead",
        )
    if "**" in text:
        raise bad(
            "uses '**', which is not supported",
            "a scope already covers everything below it: write the prefix, e.g. 'registry.example.com/team', "
            "or '*' for exactly one path component",
        )
    if text == WILDCARD:
        raise bad("would match every image", "write the catch-all rule under 'default:' instead")
    if text.startswith("/") or text.endswith("/") or "//" in text:
        raise bad("has an empty path component", f"write {'/'.join(p for p in text.split('/') if p)!r}")

    first, _, rest = text.partition("/")
    if "/" not in text and ":" in text and not text.startswith("["):
        # `name:5000` is a registry with a port; `name:latest` is a Docker Hub image with a tag.
        port_text = text.rpartition(":")[2]
        if not (port_text.isdigit() or port_text == WILDCARD):
            first = ""
    if first and _is_registry(first):
        host_text, path_text = first, rest
    else:
        host_text, path_text = DOCKER_HUB, text
    if ":" in path_text:
        without = text.rpartition(":")[0]
        raise bad(
            f"names a tag ({path_text.rpartition(':')[2]!r}); scopes name repositories, not versions",
            f"write {without!r} (require-digest pins versions)",
        )

    host, host_wildcard, port = _parse_host(host_text, bad)
    path = tuple(path_text.split("/")) if path_text else ()
    for component in path:
        if WILDCARD in component and component != WILDCARD:
            fixed = "/".join(WILDCARD if WILDCARD in c else c for c in text.split("/"))
            raise bad(
                f"has '*' inside the path component {component!r}; '*' must stand for a whole component",
                f"write {fixed!r}",
            )
    if host == _LEGACY_DOCKER_HUB:
        host = DOCKER_HUB
    if host == DOCKER_HUB and port is None and not host_wildcard and len(path) == 1:
        path = ("library", *path)  # Docker's rule: one-component Hub names are official images

    _check_literals(text, host, host_wildcard, port, path, bad)
    return Scope(text=text, host=host, host_wildcard=host_wildcard, port=port, path=path)


def _is_registry(first: str) -> bool:
    """The rule Docker uses to tell `host/repo` from a Docker Hub `namespace/repo`."""
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def _parse_host(host_text: str, bad: _Bad) -> tuple[str, bool, str | None]:
    port: str | None = None
    if host_text.startswith("["):
        end = host_text.find("]")
        if end < 0:
            raise bad("has an unterminated IPv6 address", "write it as '[::1]:5000'")
        host, rest = host_text[: end + 1], host_text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise bad("has text after the IPv6 address", "write '[ADDRESS]:PORT'")
            port = rest[1:]
    else:
        host, sep, port_text = host_text.partition(":")
        if sep:
            port = port_text
    if port is not None and port != WILDCARD:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise bad(f"has a bad port {port!r}", "write a port number from 1 to 65535, or '*' for any port")
        port = str(int(port))
    host = host.lower()
    labels = host.split(".")
    wildcard = False
    if any(WILDCARD in label for label in labels):
        if labels[0] != WILDCARD or any(WILDCARD in label for label in labels[1:]):
            raise bad(
                "has '*' inside the registry host; '*' may only be the whole first label",
                "write e.g. '*.example.com' (any registry under example.com)",
            )
        wildcard = True
        host = ".".join(labels[1:])
        if not host:
            raise bad(
                "matches every registry", "write the catch-all rule under 'default:', or '*.example.com'"
            )
    return host, wildcard, port


def _check_literals(
    text: str, host: str, host_wildcard: bool, port: str | None, path: tuple[str, ...], bad: _Bad
) -> None:
    """Check the literal parts with the image-reference grammar; wildcards become placeholders."""
    registry = f"{_PLACEHOLDER}.{host}" if host_wildcard else host
    if port is not None:
        registry += ":1" if port == WILDCARD else f":{port}"
    try:
        parsed = Reference.parse(f"{registry}/{_PLACEHOLDER}")
    except InvalidReference:
        parsed = None
    if parsed is None or parsed.registry.lower() != registry:
        raise bad(
            f"has a bad registry host {host!r}",
            "write a host name or address, e.g. 'registry.example.com:5000'",
        )
    if path:
        literal = "/".join(_PLACEHOLDER if c == WILDCARD else c for c in path)
        try:
            Reference.parse(f"{registry}/{literal}")
        except InvalidReference:
            hint = (
                f"repository names are lowercase: write {text.lower()!r}"
                if text.lower() != text
                else "use lowercase letters, digits and single separators '.', '_', '-' in each component"
            )
            raise bad(f"has a bad repository path {'/'.join(path)!r}", hint) from None
