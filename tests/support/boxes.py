"""What the runtime tests share: a store whose policy admits one pushed test image, the CLI run
in-process against it, and a way to remove the containers a test left behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support.images import Image, push_image
from support.registry import Registry
from trust.cli.app import main


@dataclass(frozen=True)
class Box:
    store: Path
    image: str
    """The pushed image, pinned by digest."""

    def trust(self, *args: str) -> int:
        """`trust COMMAND --store STORE ARGS…` in this process; its exit code."""
        return main([args[0], "--store", str(self.store), *args[1:]])

    @property
    def containers(self) -> Path:
        return self.store / "meta" / "containers"


def make_box(registry: Registry, folder: Path, repository: str, image: Image) -> tuple[Path, str]:
    """Push `image` to `repository` and make `folder/store` with a policy that admits it unsigned;
    the store and the pinned image (for a `Box` or a subclass of it)."""
    pushed = push_image(registry, repository, image)
    store = folder / "store"
    store.mkdir()
    (store / "policy.yaml").write_text(
        f"version: 1\nrules:\n  - scope: {registry.host}/{repository}\n"
        "    insecure-accept-anything: true\ndefault:\n  reject: true\n"
    )
    return store, pushed.by_digest


@contextmanager
def removing_new_containers(box: Box) -> Iterator[None]:
    """Remove (`rm -f`, which must succeed) every container made while the block runs."""
    before = set(box.containers.iterdir()) if box.containers.exists() else set()
    yield
    if box.containers.exists():
        for leftover in set(box.containers.iterdir()) - before:
            if not leftover.name.startswith("."):
                assert box.trust("rm", "--force", leftover.name) == 0
