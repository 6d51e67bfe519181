"""registries.conf (version 2, TOML), as podman, buildah and skopeo read it.

    unqualified-search-registries = ["registry.example"]
    [aliases]
    "app" = "registry.example/team/app"

    [[registry]]
    prefix = "docker.io"                 # which names this entry governs (default: location)
    location = "docker.io"               # where they really live (a prefix rewrite)
    insecure = false                     # plain HTTP allowed once HTTPS is found missing
    blocked = false                      # never contact this location
    [[registry.mirror]]
    location = "mirror.internal:5000/hub"
    pull-from-mirror = "digest-only"     # all | digest-only | tag-only

Files read (docs/registries.md): `--registries-conf FILE` or `CONTAINERS_REGISTRIES_CONF` alone;
otherwise `$HOME/.config/containers/registries.conf` if it exists, else
`/etc/containers/registries.conf`, then the `*.conf` drop-ins of `/etc/containers/registries.conf.d/`
and `$HOME/.config/containers/registries.conf.d/` in name order. A drop-in replaces a `[[registry]]`
with the same prefix and any top-level key it sets; aliases merge.

This module parses and answers questions ("where may `name` be fetched from, for a tag or a
digest?"); `pull.mirrors` does the fetching. Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pull.errors import DeniedError, UsageError
from pull.records import dataclass, field
from pull.reference import DOCKER_HUB, DOCKER_HUB_API, Reference, has_registry, is_short_name
from pull.tlsconfig import system_path

REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
_MAX_BYTES = 1024 * 1024
_REGISTRY_HEADER = re.compile(r"^\s*\[\[\s*registry\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")
_HOST_PART = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_DIGEST_TAG = re.compile(r"sha256-[0-9a-f]{64}(?:\.[a-z]+)?")
"""cosign's tags for a digest's signatures, attestations and SBOMs: addressed by digest too."""


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool
    pull_from_mirror: str
    where: str
    """`FILE:LINE` of the `[[registry.mirror]]` table, for messages."""

    def serves(self, by_digest: bool) -> bool:
        return self.pull_from_mirror == "all" or (self.pull_from_mirror == "digest-only") == by_digest


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool
    blocked: bool
    mirrors: tuple[Mirror, ...]
    where: str
    """`FILE:LINE` of the `[[registry]]` table (of its `blocked` key when there is one)."""

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def matches(self, name: str) -> bool:
        """Whether `name` (`registry/repository`) is governed by this entry."""
        if self.wildcard:
            host = name.partition("/")[0]
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix + "/")

    def rewrite(self, location: str, name: str) -> str:
        """`name` with this entry's prefix replaced by `location` (wildcards rewrite nothing)."""
        if self.wildcard or not location:
            return name
        return location + name[len(self.prefix) :]


@dataclass(frozen=True)
class Endpoint:
    """One place to fetch a name from: a registry host and the repository there."""

    host: str
    """The API host (`registry-1.docker.io` for Docker Hub), as `RegistryClient` takes it."""
    repository: str
    insecure: bool
    mirror: bool


@dataclass(frozen=True)
class Route:
    """Where requests for one name go: mirrors first (in order), then the source unless blocked."""

    mirrors: tuple[tuple[Mirror, Endpoint], ...]
    source: Endpoint
    blocked_by: str | None
    """`FILE:LINE` that blocks the source, or None."""

    def endpoints(self, by_digest: bool) -> list[Endpoint]:
        found = [endpoint for mirror, endpoint in self.mirrors if mirror.serves(by_digest)]
        return found if self.blocked_by is not None else [*found, self.source]


@dataclass(frozen=True)
class RegistriesConf:
    entries: tuple[RegistryEntry, ...] = ()
    search_registries: tuple[str, ...] | None = None
    """`unqualified-search-registries`; None when no file sets it (short names mean Docker Hub)."""
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Short name -> (fully qualified name, `FILE:LINE`)."""
    files: tuple[Path, ...] = ()

    def entry_for(self, name: str) -> RegistryEntry | None:
        """The entry governing `name`: the longest matching prefix (a literal beats a wildcard)."""
        matching = [entry for entry in self.entries if entry.matches(name)]
        if not matching:
            return None
        return max(matching, key=lambda entry: (not entry.wildcard, len(entry.prefix)))

    def may_govern(self, registry: str) -> bool:
        """Whether any entry could govern a name on `registry` (a registry name, not an API host)."""
        return any(
            entry.matches(f"{registry}/x") or entry.prefix.partition("/")[0] == registry
            for entry in self.entries
        )

    def insecure_hosts(self) -> frozenset[str]:
        """API hosts marked `insecure = true` (a registry's location, or a mirror's)."""
        hosts = set()
        for entry in self.entries:
            if entry.insecure and not entry.wildcard:
                hosts.add(_api_host(_host_of(entry.location or entry.prefix)))
            hosts.update(_api_host(_host_of(mirror.location)) for mirror in entry.mirrors if mirror.insecure)
        return frozenset(hosts)

    def route(self, registry: str, repository: str) -> Route:
        """Where `registry/repository` is fetched from."""
        name = f"{registry}/{repository}"
        entry = self.entry_for(name)
        if entry is None:
            return Route((), _endpoint(name, insecure=False, mirror=False), None)
        source = _endpoint(entry.rewrite(entry.location, name), insecure=entry.insecure, mirror=False)
        mirrors = tuple(
            (mirror, _endpoint(entry.rewrite(mirror.location, name), insecure=mirror.insecure, mirror=True))
            for mirror in entry.mirrors
        )
        return Route(mirrors, source, entry.where if entry.blocked else None)

    def refuse_blocked(self, registry: str, repository: str) -> None:
        """Raise `DeniedError` if pushing to (or reading only from) `registry/repository` is blocked."""
        route = self.route(registry, repository)
        if route.blocked_by is not None:
            raise blocked_error(f"{registry}/{repository}", route.blocked_by)

    def qualify(self, text: str) -> str:
        """`text` as the user typed it, with a short name resolved; unchanged when already qualified.

        Without `unqualified-search-registries` a short name means Docker Hub, as Docker has it
        (`busybox` -> `docker.io/library/busybox`). With it, as podman: only an alias resolves a short
        name; anything else is refused with a hint, because picking one of several registries
        would be a guess.

        Raises:
            UsageError: a short name no alias resolves, while search registries are configured.
        """
        if self.search_registries is None or not is_short_name(text):
            return text
        name, rest = _split_name(text)
        alias = self.aliases.get(name)
        if alias is not None:
            return alias[0] + rest
        searched = ", ".join(self.search_registries) or "none"
        example = f"{self.search_registries[0]}/{name}" if self.search_registries else f"docker.io/{name}"
        raise UsageError(
            f"{text!r} is a short name and no alias in {_names(self.files)} resolves it (search registries: "
            f"{searched}); trust does not guess: write the full name, e.g. {example}{rest}, "
            f'or add an alias ("{name}" = "REGISTRY/{name}") to [aliases]'
        )


def blocked_error(name: str, where: str) -> DeniedError:
    return DeniedError(
        f"registry of {name} is blocked by {where} (blocked = true), "
        "and no mirror of it may serve this request (see pull-from-mirror)"
    )


def is_digest_addressed(identifier: str) -> bool:
    """Whether a manifest request names content by digest (a digest, or cosign's `sha256-….sig` tags)."""
    return ":" in identifier or bool(_DIGEST_TAG.fullmatch(identifier))


# -- loading ------------------------------------------------------------------------------------------


def default_files() -> tuple[Path | None, list[Path]]:
    """(the main file, the drop-ins) read when no file is named."""
    home = Path.home() / ".config" / "containers"
    user = home / "registries.conf"
    main = user if user.is_file() else system_path("/etc/containers/registries.conf")
    dropins: list[Path] = []
    for directory in (system_path("/etc/containers/registries.conf.d"), home / "registries.conf.d"):
        try:
            dropins += sorted(p for p in directory.iterdir() if p.suffix == ".conf" and p.is_file())
        except OSError:
            continue
    return (main if main.is_file() else None), dropins


def load(explicit: str | None = None) -> RegistriesConf:
    """The configuration in effect: `explicit` (or `CONTAINERS_REGISTRIES_CONF`) alone, else the
    default files and drop-ins.

    Raises:
        UsageError: a file is unreadable, not TOML, in the version 1 format, or malformed
            (the message names the file and, where it can, the line).
    """
    explicit = explicit or os.environ.get(REGISTRIES_CONF_ENV) or None
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"registries configuration {explicit}: no such file")
        files = [path]
    else:
        main, dropins = default_files()
        files = ([main] if main else []) + dropins
    merged = _Merged()
    for path in files:
        merged.add(path)
    return merged.result(tuple(files))


class _Merged:
    def __init__(self) -> None:
        self.entries: dict[str, RegistryEntry] = {}
        self.search: tuple[str, ...] | None = None
        self.aliases: dict[str, tuple[str, str]] = {}

    def add(self, path: Path) -> None:
        try:
            raw = path.read_bytes()[: _MAX_BYTES + 1]
        except OSError as exc:
            raise UsageError(f"cannot read registries configuration {path}: {exc.strerror}") from None
        if len(raw) > _MAX_BYTES:
            raise UsageError(f"registries configuration {path} is larger than {_MAX_BYTES} bytes")
        text = raw.decode("utf-8", errors="replace")
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"registries configuration {path} is not valid TOML: {exc}") from None
        _parse_document(document, text, path, self)

    def result(self, files: tuple[Path, ...]) -> RegistriesConf:
        return RegistriesConf(tuple(self.entries.values()), self.search, dict(self.aliases), files)


def _parse_document(document: dict[str, Any], text: str, path: Path, into: _Merged) -> None:
    lines = text.splitlines()
    if "registries" in document:
        raise UsageError(
            f"registries configuration {path} uses the version 1 format ([registries.search]); "
            "trust reads version 2 ([[registry]] tables): see docs/registries.md"
        )
    known = {"unqualified-search-registries", "aliases", "registry", "short-name-mode", "credential-helpers"}
    for key in document:
        if key not in known:
            raise UsageError(f"{path}:{_key_line(lines, key, 0, len(lines))}: unknown key {key!r}")
    search = document.get("unqualified-search-registries")
    if search is not None:
        if not isinstance(search, list) or not all(
            isinstance(s, str) and _HOST_PART.fullmatch(s) for s in search
        ):
            raise UsageError(f"{path}: unqualified-search-registries must be a list of registry hosts")
        into.search = tuple(search)
    aliases = document.get("aliases", {})
    if not isinstance(aliases, dict):
        raise UsageError(f"{path}: [aliases] must be a table")
    for short, target in aliases.items():
        line = _key_line(lines, short, 0, len(lines), quoted=True)
        if not isinstance(target, str) or not has_registry(target):
            raise UsageError(f"{path}:{line}: alias {short!r} must name a fully qualified image")
        Reference.parse(target)  # the grammar, or InvalidReference
        into.aliases[short] = (target, f"{path}:{line}")
    tables = document.get("registry", [])
    if not isinstance(tables, list):
        raise UsageError(f"{path}: 'registry' must be an array of tables ([[registry]])")
    headers = [number for number, line in enumerate(lines) if _REGISTRY_HEADER.match(line)]
    for position, table in enumerate(tables):
        start = headers[position] if position < len(headers) else 0
        end = _table_end(lines, start)
        entry = _registry_entry(table, path, lines, start, end)
        into.entries[entry.prefix] = entry


def _registry_entry(table: Any, path: Path, lines: list[str], start: int, end: int) -> RegistryEntry:
    where = f"{path}:{start + 1}"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [[registry]] must be a table")
    allowed = {"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"}
    for key in table:
        if key not in allowed:
            raise UsageError(f"{path}:{_key_line(lines, key, start, end)}: unknown [[registry]] key {key!r}")
    location = _string(table, "location", where)
    prefix = _string(table, "prefix", where) or location
    if not prefix:
        raise UsageError(f"{where}: a [[registry]] needs a location or a prefix")
    if prefix.startswith("*."):
        if location:
            raise UsageError(f"{where}: a wildcard prefix ({prefix}) cannot have a location")
    else:
        _check_name(prefix, f"{where}: prefix")
        if location:
            _check_name(location, f"{where}: location")
    insecure = _bool(table, "insecure", where)
    blocked = _bool(table, "blocked", where)
    digest_only = _bool(table, "mirror-by-digest-only", where)
    mirrors_raw = table.get("mirror", [])
    if not isinstance(mirrors_raw, list):
        raise UsageError(f"{where}: 'mirror' must be an array of tables ([[registry.mirror]])")
    mirror_headers = [
        n for n in range(start, end) if re.match(r"^\s*\[\[\s*registry\.mirror\s*\]\]", lines[n])
    ]
    mirrors = []
    for position, raw in enumerate(mirrors_raw):
        at = f"{path}:{mirror_headers[position] + 1}" if position < len(mirror_headers) else where
        if not isinstance(raw, dict) or set(raw) - {"location", "insecure", "pull-from-mirror"}:
            raise UsageError(f"{at}: a [[registry.mirror]] takes location, insecure and pull-from-mirror")
        mirror_location = _string(raw, "location", at)
        if not mirror_location:
            raise UsageError(f"{at}: a mirror needs a location")
        _check_name(mirror_location, f"{at}: mirror location")
        mode = _string(raw, "pull-from-mirror", at) or ("digest-only" if digest_only else "all")
        if mode not in PULL_FROM_MIRROR:
            raise UsageError(
                f"{at}: pull-from-mirror must be one of {', '.join(PULL_FROM_MIRROR)}, not {mode!r}"
            )
        mirrors.append(Mirror(mirror_location, _bool(raw, "insecure", at), mode, at))
    if blocked:
        where = f"{path}:{_key_line(lines, 'blocked', start, end)}"
    return RegistryEntry(prefix, location, insecure, blocked, tuple(mirrors), where)


def _table_end(lines: list[str], start: int) -> int:
    """The line after the last one of the `[[registry]]` at `start` (its mirrors included)."""
    for number in range(start + 1, len(lines)):
        if _REGISTRY_HEADER.match(lines[number]):
            return number
        if _TABLE_HEADER.match(lines[number]) and not re.match(r"^\s*\[\[\s*registry\.", lines[number]):
            return number
    return len(lines)


def _key_line(lines: list[str], key: str, start: int, end: int, *, quoted: bool = False) -> int:
    """1-based line of `key = …` between `start` and `end` (the table's first line if not found)."""
    pattern = re.compile(rf"""^\s*(?:"{re.escape(key)}"|'{re.escape(key)}'|{re.escape(key)})\s*=""")
    for number in range(start, end):
        if pattern.match(lines[number]):
            return number + 1
    return start + 1


def _string(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a string")
    return value


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false")
    return value


def _check_name(value: str, what: str) -> None:
    """A location or prefix: `host[:port][/path]`, with a host part and a repository path."""
    host, _, path = value.partition("/")
    components = path.split("/") if path else []
    if not _HOST_PART.fullmatch(host) or not all(
        re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", c) for c in components
    ):
        raise UsageError(f"{what} {value[:200]!r} is not host[:port][/path]")


def _split_name(text: str) -> tuple[str, str]:
    """`app:v1@sha256:…` -> (`app`, `:v1@sha256:…`)."""
    match = re.match(r"[^:@]*", text)
    assert match is not None
    return match.group(0), text[match.end() :]


def _host_of(name: str) -> str:
    return name.partition("/")[0]


def _api_host(registry: str) -> str:
    return DOCKER_HUB_API if registry in (DOCKER_HUB, "index.docker.io") else registry


def _endpoint(name: str, *, insecure: bool, mirror: bool) -> Endpoint:
    registry, _, repository = name.partition("/")
    if registry in (DOCKER_HUB, "index.docker.io") and "/" not in repository:
        repository = f"library/{repository}"
    return Endpoint(_api_host(registry), repository, insecure, mirror)


def registry_name(api_host: str) -> str:
    """The registry name an API host serves (`registry-1.docker.io` serves `docker.io`)."""
    return DOCKER_HUB if api_host == DOCKER_HUB_API else api_host


def _names(files: tuple[Path, ...]) -> str:
    return ", ".join(str(path) for path in files) or "registries.conf"
