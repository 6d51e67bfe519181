"""Named volumes: directories in the store that outlive containers (`-v NAME:/CTR`).

    volumes = Volumes(content.meta)
    volume, fresh = volumes.ensure("pgdata")      # made on first use, as docker and podman do
    spec mount: bind volume.data onto /CTR        # run/mounts.py, resolved by run/containers.py

Layout, docker's: `<store>/meta/volumes/NAME/_data` (what the container sees) and `volume.json`
beside it (name, created, labels). A volume made by a container's first use is filled with what
the image has at the mount point (docker's and podman's "copy-up"; `run/filecopy.copy_up`), so
`-v data:/var/lib/app` starts with the image's files. Volumes are never removed by `rm` or `gc`: only
by `trust volume rm` / `prune`, and never while a container (of any state) names them; the
containers' lock serialises that check with a container claiming the volume.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pull.errors import UsageError
from pull.records import dataclass

VOLUMES_DIR = "volumes"
DATA_DIR = "_data"
RECORD_FILE = "volume.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""docker's volume names: no `/`, so a name is never a path."""


def check_name(name: str, flag: str = "volume") -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid {flag} name {name[:80]!r}: letters, digits, '_', '.' and '-', starting with a "
            "letter or digit (a host path must be absolute)"
        )
    return name


@dataclass(frozen=True)
class Volume:
    name: str
    directory: Path
    created: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def data(self) -> Path:
        """What a container mounts."""
        return self.directory / DATA_DIR

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mountpoint": str(self.data),
            "created": self.created,
            "labels": dict(self.labels),
            "driver": "local",
        }


class Volumes:
    def __init__(self, meta: Path) -> None:
        self.root = meta / VOLUMES_DIR

    def create(self, name: str, labels: Iterable[tuple[str, str]] = ()) -> Volume:
        """Make the volume; an existing one of that name is returned as it is (as `docker volume create`)."""
        volume, _ = self.ensure(name, labels)
        return volume

    def ensure(self, name: str, labels: Iterable[tuple[str, str]] = ()) -> tuple[Volume, bool]:
        """The volume, and whether it was made now (then it is empty, for copy-up)."""
        check_name(name)
        found = self.find(name)
        if found is not None:
            return found, False
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the image's setuid files stay inside
        staging = self.root / f".new-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        (staging / DATA_DIR).mkdir(mode=0o755)
        volume = Volume(name, self.root / name, _now(), tuple(labels))
        record = volume.to_json()
        del record["mountpoint"]
        (staging / RECORD_FILE).write_text(json.dumps(record) + "\n")
        try:
            os.rename(staging, volume.directory)  # complete or absent, never half made
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            found = self.find(name)
            if found is None:
                raise
            return found, False  # made meanwhile by another process
        return volume, True

    def find(self, name: str) -> Volume | None:
        directory = self.root / name
        try:
            doc = json.loads((directory / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise UsageError(f"volume {name!r} has an unreadable record: {err}") from None
        labels = doc.get("labels") if isinstance(doc, dict) else None
        return Volume(
            name,
            directory,
            str(doc.get("created", "")) if isinstance(doc, dict) else "",
            tuple((str(k), str(v)) for k, v in labels.items()) if isinstance(labels, dict) else (),
        )

    def get(self, name: str) -> Volume:
        found = self.find(check_name(name))
        if found is None:
            raise UsageError(f"no such volume: {name}")
        return found

    def __iter__(self) -> Iterator[Volume]:
        if not self.root.is_dir():
            return
        for entry in sorted(self.root.iterdir()):
            if not entry.name.startswith("."):
                found = self.find(entry.name)
                if found is not None:
                    yield found

    def remove(self, name: str, in_use: Iterable[str]) -> None:
        """Delete the volume and its data. The caller holds the containers' lock and names the
        volumes that containers use, so none disappears under a container."""
        volume = self.get(name)
        users = list(in_use)
        if users:
            raise UsageError(
                f"volume {name} is in use by container {users[0][:12]}"
                + (f" (and {len(users) - 1} more)" if len(users) > 1 else "")
                + ": remove the container first"
            )
        # Renamed first: a crash mid-delete leaves a hidden directory, not a half-emptied volume.
        doomed = self.root / f".removing-{name}-{os.getpid()}"
        os.rename(volume.directory, doomed)
        shutil.rmtree(doomed)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
