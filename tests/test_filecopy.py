"""run.filecopy.extract against hostile tar streams: what `trust cp` takes out of a container (and
a volume's copy-up out of an image) is extracted on the host, so nothing in it may leave the
destination. Streams are built here entry by entry; tests/test_volumes.py runs `trust cp` itself."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from run.filecopy import UnsafeEntry, extract


def stream(*entries: tuple[str, bytes | str | None, dict[str, object]]) -> tarfile.TarFile:
    """A tar stream (read as `trust cp` reads one) of (name, content, attributes): bytes make a
    file, None a directory unless the attributes say otherwise, a str a symlink to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content, attributes in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if content is None else 0o644
            data = None
            if isinstance(content, bytes):
                info.size, data = len(content), io.BytesIO(content)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
            else:
                info.type = tarfile.DIRTYPE
            for key, value in attributes.items():
                setattr(info, key, value)
            archive.addfile(info, data)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r|")


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """An empty destination, and a directory beside it with a file an attack would reach."""
    destination, outside = tmp_path / "destination", tmp_path / "outside"
    destination.mkdir()
    outside.mkdir(mode=0o700)
    (outside / "secret").write_text("host")
    return destination, outside


def test_files_directories_and_symlinks_are_extracted_where_their_names_say(
    places: tuple[Path, Path],
) -> None:
    destination, outside = places
    extract(
        stream(
            ("dir", None, {}),
            ("dir/file", b"data", {}),
            ("/absolute/name", b"x", {}),  # a leading / is dropped, as tar does
            ("./dot/./file", b"y", {}),
            ("dir/to-host", str(outside / "secret"), {}),  # kept as it is, as docker cp keeps it
        ),
        str(destination),
    )
    assert (destination / "dir/file").read_bytes() == b"data"
    assert (destination / "absolute/name").read_bytes() == b"x"
    assert (destination / "dot/file").read_bytes() == b"y"
    assert os.readlink(destination / "dir/to-host") == str(outside / "secret")


@pytest.mark.parametrize(
    "entry",
    [
        ("link/secret", b"overwritten", {}),  # a file written through the symlink
        ("link", b"overwritten", {}),  # the symlink's own name as a file: open() would follow it
        ("link", None, {"mode": 0o777}),  # as a directory: chmod would follow it
        ("link/new", None, {}),  # a directory created through it
        ("copy", None, {"type": tarfile.LNKTYPE, "linkname": "link/secret"}),  # a hard link through it
    ],
    ids=["file-through", "file-on", "dir-on", "dir-through", "hardlink-through"],
)
def test_nothing_goes_through_a_symlink_the_stream_made(
    places: tuple[Path, Path], entry: tuple[str, bytes | None, dict[str, object]]
) -> None:
    destination, outside = places
    with pytest.raises(UnsafeEntry, match="symlink 'link'"):
        extract(stream(("link", str(outside), {}), entry), str(destination))
    assert (outside / "secret").read_text() == "host"
    assert sorted(os.listdir(outside)) == ["secret"]
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "entry",
    [
        ("../outside/secret", b"overwritten", {}),
        ("dir/../../outside/secret", b"overwritten", {}),
        ("copy", None, {"type": tarfile.LNKTYPE, "linkname": "../outside/secret"}),
    ],
    ids=["dotdot", "dotdot-inside", "hardlink-out"],
)
def test_nothing_climbs_out_with_dotdot(
    places: tuple[Path, Path], entry: tuple[str, bytes | None, dict[str, object]]
) -> None:
    destination, outside = places
    with pytest.raises(UnsafeEntry, match=r"climbs out"):
        extract(stream(entry), str(destination))
    assert (outside / "secret").read_text() == "host"
    assert not (destination / "copy").exists()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_nodes_and_fifos_are_refused(places: tuple[Path, Path], kind: bytes) -> None:
    destination, _ = places
    with pytest.raises(UnsafeEntry, match="device node or FIFO"):
        extract(stream(("null", None, {"type": kind, "devmajor": 1, "devminor": 3})), str(destination))
    assert os.listdir(destination) == []


def test_special_bits_and_group_write_are_cleared_unless_modes_are_kept(tmp_path: Path) -> None:
    entries = (
        (".", None, {"mode": 0o1777}),  # the destination itself (a volume takes its image's mode)
        ("tool", b"#!", {"mode": 0o4775}),
        ("shared", None, {"mode": 0o2777}),
    )
    cleared, kept = tmp_path / "cleared", tmp_path / "kept"
    cleared.mkdir()
    kept.mkdir()
    extract(stream(*entries), str(cleared))
    extract(stream(*entries), str(kept), keep_modes=True)
    modes = [
        tuple(stat.S_IMODE((root / name).stat().st_mode) for name in (".", "tool", "shared"))
        for root in (cleared, kept)
    ]
    assert modes == [(0o755, 0o755, 0o755), (0o1777, 0o4775, 0o2777)]


def test_a_directory_keeps_its_time_and_mode_after_its_contents_are_in(places: tuple[Path, Path]) -> None:
    destination, _ = places
    extract(
        stream(("dir", None, {"mtime": 1_000_000, "mode": 0o555}), ("dir/file", b"x", {"mtime": 2_000_000})),
        str(destination),
    )
    info = (destination / "dir").stat()
    assert (info.st_mtime, stat.S_IMODE(info.st_mode)) == (1_000_000, 0o555)
    assert (destination / "dir/file").stat().st_mtime == 2_000_000
