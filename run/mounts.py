"""What a container mounts besides its image: `-v HOST:CTR[:ro|rw]`, `--tmpfs PATH[:OPTIONS]` and
`--mount type=bind|tmpfs,…`, turned into OCI `mounts` entries.

    mounts = [parse_volume("/srv/data:/data:ro"), parse_tmpfs("/tmp:size=64m"),
              parse_mount("type=bind,source=/srv/conf,target=/etc/app,readonly")]
    spec["mounts"] += [m.to_spec() for m in sorted_for_mounting(mounts)]

The destination is a path *inside the container*. trust never resolves it on the host: the runtime
does, inside the rootfs (runc's and crun's secure join: a symlink in the image, even `/data ->
/etc` or `../../..`, is followed as if the rootfs were `/`), so an image cannot point a bind mount
at a host directory. The source of a bind is a host path, which must exist and be absolute (no
auto-created directories: a typo must not become an empty directory). A source that is a name, not
a path, is a named volume (`run/volumes.py`): `Mount.volume` holds the name until the container's
creation resolves it to the volume's directory.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pull.errors import UsageError
from pull.records import dataclass

_TMPFS_OPTION = re.compile(
    r"(size=\d+[kmg%]?|mode=[0-7]{3,4}|uid=\d+|gid=\d+|nr_inodes=\d+[kmg]?|"
    r"exec|noexec|suid|nosuid|dev|nodev|ro|rw|atime|noatime|relatime|strictatime)",
    re.IGNORECASE,
)
_TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")
"""docker's and podman's --tmpfs defaults (later options given by the user win, as in mount(8))."""
_FORBIDDEN_DESTINATIONS = ("/", "/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Mount:
    kind: str
    """bind or tmpfs"""
    destination: str
    source: str = ""
    """The host path of a bind."""
    read_only: bool = False
    options: tuple[str, ...] = ()
    """tmpfs options (size=64m, mode=1777, …)."""
    volume: str = ""
    """A named volume's name (then `source` is its directory, once resolved)."""
    copy_up: bool = True
    """A volume made by this mount is filled with the image's files at the destination (not `nocopy`)."""

    def to_spec(self) -> dict[str, Any]:
        if self.kind == "tmpfs":
            options = [*_TMPFS_DEFAULTS, *self.options, *(["ro"] if self.read_only else [])]
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs", "options": options}
        if not self.source:
            raise ValueError(f"volume {self.volume} mounted before it was resolved")
        options = ["rbind", "rprivate", "ro" if self.read_only else "rw"]
        return {"destination": self.destination, "type": "bind", "source": self.source, "options": options}

    def to_json(self) -> dict[str, Any]:
        if self.volume:
            return {
                "type": "volume",
                "source": self.volume,
                "destination": self.destination,
                "readOnly": self.read_only,
                "options": [] if self.copy_up else ["nocopy"],
            }
        return {
            "type": self.kind,
            "source": self.source or None,
            "destination": self.destination,
            "readOnly": self.read_only,
            "options": list(self.options),
        }


def parse_volume(text: str) -> Mount:
    """`-v HOST:CTR[:OPTIONS]` or `-v NAME:CTR[:OPTIONS]`; OPTIONS: ro or rw, and nocopy for a volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UsageError(f"invalid --volume {text!r}: use /HOST/PATH:/CONTAINER/PATH[:ro|rw] or NAME:/PATH")
    options = parts[2].split(",") if len(parts) == 3 else []
    for option in options:
        if option not in ("ro", "rw", "nocopy") or (option == "nocopy" and parts[0].startswith("/")):
            raise UsageError(f"invalid --volume {text!r}: the options are ro, rw and (for a volume) nocopy")
    read_only = "ro" in options
    if not parts[0].startswith("/"):
        return _volume(
            parts[0], parts[1], read_only=read_only, copy_up="nocopy" not in options, flag="--volume"
        )
    return _bind(parts[0], parts[1], read_only=read_only, flag="--volume")


def parse_tmpfs(text: str) -> Mount:
    """`--tmpfs PATH[:OPTION,OPTION…]`, e.g. `/tmp:size=64m,mode=1777`."""
    path, _, options = text.partition(":")
    return Mount("tmpfs", destination(path, "--tmpfs"), options=_tmpfs_options(options, text))


def parse_mount(text: str) -> Mount:
    """`--mount type=bind,source=/a,target=/b[,readonly]` or
    `--mount type=tmpfs,target=/t[,tmpfs-size=N][,tmpfs-mode=M]` (docker's keys and aliases)."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro") and (not sep or value.lower() in ("true", "1")):
            fields["readonly"] = "true"
            continue
        if key in ("readonly", "ro") and value.lower() in ("false", "0"):
            continue
        if not sep or not value:
            raise UsageError(f"invalid --mount {text!r}: {item!r} is not KEY=VALUE")
        key = {"src": "source", "dst": "target", "destination": "target"}.get(key, key)
        if key in fields:
            raise UsageError(f"invalid --mount {text!r}: {key} given twice")
        fields[key] = value
    kind = fields.pop("type", "")
    target = fields.pop("target", "")
    read_only = fields.pop("readonly", "") == "true"
    if kind == "bind":
        source = fields.pop("source", "")
        _no_more(fields, text)
        return _bind(source, target, read_only=read_only, flag="--mount")
    if kind == "volume":
        source = fields.pop("source", "")
        nocopy = fields.pop("volume-nocopy", "false").lower() in ("true", "1")
        _no_more(fields, text)
        if not source:
            raise UsageError(f"invalid --mount {text!r}: a volume needs source=NAME (no anonymous volumes)")
        return _volume(source, target, read_only=read_only, copy_up=not nocopy, flag="--mount")
    if kind == "tmpfs":
        options = []
        if "tmpfs-size" in fields:
            options.append(f"size={fields.pop('tmpfs-size')}")
        if "tmpfs-mode" in fields:
            options.append(f"mode={fields.pop('tmpfs-mode')}")
        _no_more(fields, text)
        return Mount(
            "tmpfs",
            destination(target, "--mount"),
            read_only=read_only,
            options=_tmpfs_options(",".join(options), text),
        )
    raise UsageError(f"invalid --mount {text!r}: type must be bind, volume or tmpfs")


def sorted_for_mounting(mounts: Iterable[Mount]) -> list[Mount]:
    """Parents before children (`/data` before `/data/cache`), whatever the order given.

    Raises:
        UsageError: two mounts on the same destination.
    """
    out = sorted(mounts, key=lambda m: len([p for p in m.destination.split("/") if p]))
    seen: set[str] = set()
    for mount in out:
        if mount.destination in seen:
            raise UsageError(f"two mounts on {mount.destination}")
        seen.add(mount.destination)
    return out


def destination(path: str, flag: str) -> str:
    """An absolute, normalised path in the container; `/`, `/proc`, `/sys`, `/dev` themselves refused."""
    if not path.startswith("/") or "\0" in path:
        raise UsageError(f"invalid {flag} destination {path!r}: an absolute path in the container")
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal in _FORBIDDEN_DESTINATIONS:
        raise UsageError(f"invalid {flag} destination {path!r}: trust mounts {normal} itself")
    return normal


def _bind(source: str, target: str, *, read_only: bool, flag: str) -> Mount:
    if not source.startswith("/"):
        raise UsageError(f"invalid {flag} source {source!r}: an absolute host path")
    if not Path(source).exists():
        raise UsageError(f"invalid {flag}: the host path {source} does not exist")
    return Mount("bind", destination(target, flag), source=posixpath.normpath(source), read_only=read_only)


def _volume(name: str, target: str, *, read_only: bool, copy_up: bool, flag: str) -> Mount:
    from run.volumes import check_name

    return Mount(
        "bind",
        destination(target, flag),
        read_only=read_only,
        volume=check_name(name, f"{flag} volume"),
        copy_up=copy_up,
    )


def _tmpfs_options(options: str, text: str) -> tuple[str, ...]:
    out = tuple(option for option in options.split(",") if option)
    for option in out:
        if not _TMPFS_OPTION.fullmatch(option):
            raise UsageError(f"invalid tmpfs option {option!r} in {text!r}")
    return out


def _no_more(fields: dict[str, str], text: str) -> None:
    if fields:
        raise UsageError(f"invalid --mount {text!r}: unsupported {', '.join(sorted(fields))}")
