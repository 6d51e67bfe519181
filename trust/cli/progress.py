"""Rich progress bars for pulls and copies, shown only when stderr is a terminal.

The pull pipeline reports through the `PullProgress` protocol; this is one listener for it.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pull.manifest import Descriptor


class RichPullProgress:
    """One bar per layer; layers the store already has say "already exists"."""

    def __init__(self, verb: str = "pulling") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._verb = verb
        self._tasks: dict[str, TaskID] = {}
        self._existing: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> RichPullProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def blob_started(self, descriptor: Descriptor, already_exists: bool) -> None:
        short = descriptor.digest.hex[:12]
        with self._lock:
            if already_exists:
                self._existing.add(short)
                self._tasks[short] = self._progress.add_task(
                    f"{short} already exists", total=descriptor.size, completed=descriptor.size
                )
            else:
                self._tasks[short] = self._progress.add_task(f"{short} {self._verb}", total=descriptor.size)

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        with self._lock:
            self._progress.advance(self._tasks[descriptor.digest.hex[:12]], nbytes)

    def blob_finished(self, descriptor: Descriptor) -> None:
        short = descriptor.digest.hex[:12]
        with self._lock:
            if short not in self._existing:
                self._progress.update(self._tasks[short], description=f"{short} verified")
