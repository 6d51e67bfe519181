"""Hostile layers must never create or change anything outside the snapshot directory.

The cases are those of containerd's archive `TestBreakouts` (pkg/archive/tar_test.go) and umoci's
tar-extract tests (oci/layer/tar_extract_test.go), re-expressed for trust's policy, plus a few of
our own. Where those projects resolve a path "as if chrooted" and write through an in-layer symlink,
trust refuses the layer instead: an entry whose parent is a symlink, a `..` component, or a hard
link to anything not created earlier in the same layer. `/etc`-style targets are replaced by the
absolute path of a canary directory beside the target, so an escape would be seen, not just feared.

Every case asserts both the outcome (the expected refusal, or the expected tree) and that the
canaries outside the target are byte-for-byte, mode-for-mode and inode-for-inode unchanged.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.tars import (
    Canaries,
    TarEntry,
    device,
    directory,
    fifo,
    file,
    hardlink,
    symlink,
    tar,
    whiteout,
    write_layer,
)

from run.unpack import UnsafeLayer, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (mknod, chown)")

Check = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    name: str
    entries: Callable[[str], list[TarEntry]]
    """Builds the layer's entries, given the canary directory's absolute path."""
    refused: str | None = None
    """A substring of the expected UnsafeLayer message; None if the layer must apply cleanly."""
    check: Check | None = None
    """For a clean apply: checks on the target directory."""


# -- checks on the target ---------------------------------------------------------------------------


def same_file(a: str, b: str) -> Check:
    def check(root: Path) -> None:
        sa, sb = (root / a).lstat(), (root / b).lstat()
        assert (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino), f"{a} and {b} are not the same inode"

    return check


def not_same_file(a: str, b: str) -> Check:
    def check(root: Path) -> None:
        assert (root / a).lstat().st_ino != (root / b).lstat().st_ino

    return check


def is_symlink(path: str, target: str | None = None) -> Check:
    def check(root: Path) -> None:
        assert (root / path).is_symlink(), f"{path} is not a symlink"
        if target is not None:
            assert os.readlink(root / path) == target

    return check


def is_dir(path: str) -> Check:
    def check(root: Path) -> None:
        assert stat.S_ISDIR((root / path).lstat().st_mode), f"{path} is not a real directory"

    return check


def content(path: str, data: bytes) -> Check:
    def check(root: Path) -> None:
        st = (root / path).lstat()
        assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
        assert (root / path).read_bytes() == data

    return check


def missing(path: str) -> Check:
    def check(root: Path) -> None:
        assert not os.path.lexists(root / path)

    return check


def all_of(*checks: Check) -> Check:
    def check(root: Path) -> None:
        for one in checks:
            one(root)

    return check


def _symlink_scoping(prefix: str) -> Callable[[str], list[TarEntry]]:
    """umoci's TestUnpackEntrySymlinkScoping: a symlink to `prefix`, then a file below it."""
    return lambda c: [symlink("link", prefix), file("link/file", b"container")]


# -- the cases --------------------------------------------------------------------------------------

INSIDE = b"inside\n"
SYMLINK_PARENT = "is a symlink"
OUTSIDE = "outside this layer"
DOTDOT = "'..'"
ROOT = "layer root"
BAD_WHITEOUT = "a whiteout must name a file"

CASES = [
    # containerd TestBreakouts -----------------------------------------------------------------
    Case(
        "SymlinkAbsolute",
        lambda c: [directory("etc"), symlink("localetc", f"{c}/etc"), file("/localetc/unbroken", b"broken")],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "SymlinkUpAndOut",
        lambda c: [
            directory("etc"),
            directory("dummy"),
            symlink("localetc", "/dummy/../../canary/etc"),
            file("/localetc/unbroken", b"broken"),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "SymlinkMultipleAbsolute",
        lambda c: [
            directory("etc"),
            directory("dummy"),
            symlink("/dummy/etc", f"{c}/etc"),
            symlink("localetc", "/dummy/etc"),
            file("/dummy/etc/unbroken", b"broken"),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "SymlinkMultipleRelative",
        lambda c: [
            directory("etc"),
            directory("dummy"),
            symlink("/dummy/etc", f"{c}/etc"),
            symlink("localetc", "./dummy/etc"),
            file("/localetc/unbroken", b"broken"),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "SymlinkEmptyFile",
        lambda c: [
            directory("etc"),
            file("etc/emptied", b"notempty"),
            symlink("localetc", f"{c}/etc"),
            file("/localetc/passwd", b""),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "HardlinkRelative",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            directory("breakouts"),
            symlink("breakouts/d1", "../../canary/etc"),
            hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
        ],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkDownAndOut",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            directory("breakouts"),
            directory("downandout"),
            symlink("breakouts/d1", "../downandout/../../canary/etc"),
            hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
        ],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkAbsolute",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("localetc", f"{c}/etc"),
            hardlink("localpasswd", "/localetc/passwd"),
        ],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkRelativeLong",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("localetc", "../" * 20 + c.lstrip("/") + "/etc"),
            hardlink("localpasswd", "/localetc/passwd"),
        ],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkRelativeUpAndOut",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("localetc", "upandout/../../../canary/etc"),
            hardlink("localpasswd", "/localetc/passwd"),
        ],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkDirectRelative",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            hardlink("localpasswd", "../../../../../canary/etc/passwd"),
        ],
        refused=DOTDOT,
    ),
    Case(
        "HardlinkDirectAbsolute",  # "/etc/passwd" means the layer's own etc/passwd
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            hardlink("localpasswd", "/etc/passwd"),
        ],
        check=all_of(same_file("localpasswd", "etc/passwd"), content("localpasswd", INSIDE)),
    ),
    Case(
        "HardlinkDirectAbsoluteToHost",  # an absolute host path is also only looked up in the layer
        lambda c: [directory("etc"), file("etc/passwd", INSIDE), hardlink("localpasswd", f"{c}/etc/passwd")],
        refused=OUTSIDE,
    ),
    Case(
        "SymlinkParentDirectory",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("..", f"{c}/etc/"),
            hardlink("localpasswd", "/etc/passwd"),
        ],
        refused=DOTDOT,
    ),
    Case(
        "SymlinkEmptyFilename",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("", f"{c}/etc/"),
            hardlink("localpasswd", "/etc/passwd"),
        ],
        refused=ROOT,
    ),
    Case(
        "SymlinkNamedDot",
        lambda c: [directory("etc"), symlink(".", f"{c}/etc"), file("passwd", b"through the root?")],
        refused=ROOT,
    ),
    Case(
        "SymlinkNamedDotSlash",
        lambda c: [symlink("./", f"{c}"), file("./etc/passwd", b"owned")],
        refused=ROOT,
    ),
    Case(
        "SymlinkParentRelative",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("localetc/sub/..", f"{c}/etc/"),
            hardlink("/localetc/localpasswd", "/etc/passwd"),
        ],
        refused=DOTDOT,
    ),
    Case(
        "SymlinkSlashEnded",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            directory("localetc/"),
            hardlink("/localetc/localpasswd", "/etc/passwd"),
        ],
        check=same_file("localetc/localpasswd", "etc/passwd"),
    ),
    Case(
        "SymlinkOverrideDirectory",
        lambda c: [
            directory("etc"),
            file("etc/passwd", INSIDE),
            directory("localetc"),
            file("localetc/keep", b"keep"),
            symlink("localetc", f"{c}/etc"),  # replaces the directory (removed without following)
            hardlink("/localetc/localpasswd", "/etc/passwd"),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "SymlinkOverrideDirectoryRelative",
        lambda c: [
            directory("etc"),
            file("etc/passwd", INSIDE),
            directory("localetc"),
            symlink("localetc", "../../canary/etc"),
            hardlink("/localetc/localpasswd", "/etc/passwd"),
        ],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "DirectoryOverrideSymlink",
        lambda c: [
            directory("etc"),
            file("etc/passwd", INSIDE),
            symlink("localetc", f"{c}/etc"),
            directory("/localetc/"),  # replaces the symlink with a real directory
            hardlink("/localetc/localpasswd", "/etc/passwd"),
        ],
        check=all_of(is_dir("localetc"), same_file("localetc/localpasswd", "etc/passwd")),
    ),
    Case(
        "DirectoryOverrideSymlinkAndHardlink",
        lambda c: [
            directory("etc"),
            file("etc/passwd", INSIDE),
            symlink("localetc", "etc"),
            directory("/localetc/"),
            file("/localetc/localpasswd", b"different"),
        ],
        check=all_of(
            is_dir("localetc"),
            not_same_file("localetc/localpasswd", "etc/passwd"),
            content("etc/passwd", INSIDE),
            content("localetc/localpasswd", b"different"),
        ),
    ),
    Case("WhiteoutRootParent", lambda c: [file(".wh...")], refused=BAD_WHITEOUT),
    Case("WhiteoutParent", lambda c: [directory("etc"), file("etc/.wh...")], refused=BAD_WHITEOUT),
    Case("WhiteoutRoot", lambda c: [file(".wh..")], refused=BAD_WHITEOUT),
    Case("WhiteoutCurrentDirectory", lambda c: [directory("etc"), file("etc/.wh..")], refused=BAD_WHITEOUT),
    Case(
        "WhiteoutSymlinkPath",
        lambda c: [symlink("localetc", f"{c}/etc"), whiteout("localetc/passwd")],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "WhiteoutDirectoryName",  # only the last component is a whiteout marker
        lambda c: [file(".wh.etc/somefile", b"non-empty")],
        check=content(".wh.etc/somefile", b"non-empty"),
    ),
    Case(
        "WhiteoutDeadSymlinkParent",
        lambda c: [symlink("localetc", "/dne"), file("localetc/.wh.etc")],
        refused=SYMLINK_PARENT,
    ),
    Case("WhiteoutRelativePath", lambda c: [file("dne/../.wh.etc")], refused=DOTDOT),
    Case(
        "HardlinkSymlinkBeforeCreateTarget",
        lambda c: [
            directory("etc", mode=0o770),
            symlink("localpasswd", f"{c}/etc/passwd"),
            hardlink("localpasswd-dup", "localpasswd"),  # links the symlink itself
            file("/etc/passwd", b"after"),
        ],
        check=all_of(
            is_symlink("localpasswd-dup"),
            same_file("localpasswd-dup", "localpasswd"),
            content("etc/passwd", b"after"),
        ),
    ),
    Case(
        "HardlinkSymlinkRelative",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("passwdlink", "../../../../../canary/etc/passwd"),
            hardlink("localpasswd", "/passwdlink"),
        ],
        check=all_of(
            is_symlink("localpasswd", "../../../../../canary/etc/passwd"),
            same_file("localpasswd", "passwdlink"),
        ),
    ),
    Case(
        "HardlinkSymlinkAbsolute",
        lambda c: [
            directory("etc", mode=0o770),
            file("/etc/passwd", INSIDE),
            symlink("passwdlink", f"{c}/etc/passwd"),
            hardlink("localpasswd", "/passwdlink"),
        ],
        check=all_of(
            lambda root: is_symlink("localpasswd", f"{root.parent}/canary/etc/passwd")(root),
            same_file("localpasswd", "passwdlink"),
        ),
    ),
    Case(
        "HardlinkSymlinkChmod",  # an absolute *name* lands inside the layer; perm400 keeps its mode
        lambda c: [
            symlink(f"{c}/also-exists", f"{c}/perm400"),
            hardlink("sketchylink", f"{c}/also-exists"),
        ],
        check=lambda root: same_file("sketchylink", str(root.parent / "canary/also-exists").lstrip("/"))(
            root
        ),
    ),
    # umoci tar_extract_test.go ----------------------------------------------------------------
    Case("SanitiseScopingGarbagePrefix", lambda c: [file("/../file", b"container")], refused=DOTDOT),
    Case("SanitiseScopingDotDotPrefix", lambda c: [file("../file", b"container")], refused=DOTDOT),
    *[
        Case(f"SymlinkScoping[{prefix}]", _symlink_scoping(prefix), refused=SYMLINK_PARENT)
        for prefix in [
            "/",
            "/../",
            "/../../../../../../../../../../../../../../../",
            "/./.././.././../",
            "..",
        ]
    ],
    Case(
        "UnpackHardlink",  # hard links to a file and to a symlink, the header's owner ignored
        lambda c: [
            file("regular", b"some content", uid=0, gid=0),
            hardlink("hard link", "/regular", uid=1337, gid=2020),
            symlink("link", "../../../regular"),
            hardlink("hard link to symlink", "/link", uid=1337, gid=2020),
        ],
        check=all_of(
            same_file("hard link", "regular"),
            same_file("hard link to symlink", "link"),
            is_symlink("hard link to symlink", "../../../regular"),
            lambda root: None if (root / "regular").lstat().st_uid == 0 else pytest.fail("owner changed"),
        ),
    ),
    Case(
        "UnpackHardlinkDotDot",  # umoci cleans "../../../link" to "link"; trust refuses the name
        lambda c: [symlink("link", "regular"), hardlink("hard", "../../../link")],
        refused=DOTDOT,
    ),
    # our own --------------------------------------------------------------------------------------
    Case(
        "FileReplacesSymlink",  # O_EXCL after unlinking: the new file is never opened through the link
        lambda c: [symlink("x", f"{c}/etc/passwd"), file("x", b"mine", mode=0o4755)],
        check=all_of(content("x", b"mine"), lambda root: _mode_is(root / "x", 0o4755)),
    ),
    Case(
        "HardlinkReplacesSymlink",
        lambda c: [file("f", b"f"), symlink("x", f"{c}/etc/passwd"), hardlink("x", "f")],
        check=same_file("x", "f"),
    ),
    Case(
        "FifoReplacesSymlink",
        lambda c: [symlink("x", f"{c}/etc/passwd"), fifo("x", mode=0o600)],
        check=lambda root: None if stat.S_ISFIFO((root / "x").lstat().st_mode) else pytest.fail("not a FIFO"),
    ),
    Case(
        "DirectoryReplacesSymlinkToDirectory",  # metadata and xattrs land on our directory only
        lambda c: [symlink("d", f"{c}/dir"), directory("d", mode=0o700, uid=4321, xattrs={"user.mark": "x"})],
        check=all_of(is_dir("d"), lambda root: _mode_is(root / "d", 0o700)),
    ),
    Case(
        "SymlinkOwnerIsTheLinks",  # lchown: the canary's owner is untouched
        lambda c: [symlink("x", f"{c}/etc/passwd", uid=4321, gid=4321)],
        check=lambda root: None if (root / "x").lstat().st_uid == 4321 else pytest.fail("owner not set"),
    ),
    Case(
        "DirectoryWithEscapingSymlinkReplacedByFile",  # removal must not follow d/out into the canary
        lambda c: [
            directory("d"),
            directory("d/sub"),
            symlink("d/out", f"{c}/etc"),
            symlink("d/sub/up", "../../../canary"),
            file("d/sub/f", b"f"),
            file("d", b"now a file"),
        ],
        check=content("d", b"now a file"),
    ),
    Case(
        "SymlinkReplacesDirectoryThenWriteThrough",
        lambda c: [directory("d"), file("d/a", b"a"), symlink("d", c), file("d/b", b"owned")],
        refused=SYMLINK_PARENT,
    ),
    Case(
        "AbsoluteNameStaysInside",
        lambda c: [file(f"{c}/etc/passwd", b"evil")],
        check=lambda root: content(str(root.parent / "canary/etc/passwd").lstrip("/"), b"evil")(root),
    ),
    Case(
        "HardlinkToDirectory",
        lambda c: [directory("d"), hardlink("x", "d")],
        refused="hard link to a directory",
    ),
    Case("HardlinkToNothing", lambda c: [hardlink("x", "etc/shadow")], refused=OUTSIDE),
    Case(
        "HardlinkToWhiteout",  # the file it names lives in a lower layer
        lambda c: [whiteout("etc/shadow"), hardlink("x", "etc/shadow")],
        refused=OUTSIDE,
    ),
    Case(
        "HardlinkThroughReplacedDirectory",  # "a" replaced by a link to what was inside it
        lambda c: [directory("a"), file("a/b", b"b"), hardlink("a", "a/b")],
        refused=OUTSIDE,
    ),
    Case("RegularFileAsRoot", lambda c: [file("./", b"x")], refused=ROOT),
    Case("HardlinkAsRoot", lambda c: [file("f"), hardlink(".", "f")], refused=ROOT),
    # Device nodes are skipped, never created (the runtime mounts its own /dev over them).
    Case("CharDevice", lambda c: [device("dev/null", tarfile.CHRTYPE, 1, 3)], check=missing("dev/null")),
    Case("BlockDevice", lambda c: [device("dev/sda", tarfile.BLKTYPE, 8, 0)], check=missing("dev/sda")),
    Case(
        "WhiteoutShapedCharDevice",  # a 0:0 char device from the tar must not become our whiteout
        lambda c: [device("etc/passwd", tarfile.CHRTYPE, 0, 0)],
        check=missing("etc/passwd"),
    ),
    Case(
        "OverlayXattrOnDirectory",
        lambda c: [directory("d", xattrs={"trusted.overlay.opaque": "y"})],
        refused="trusted.overlay.opaque",
    ),
    Case(
        "OverlayRedirectXattr",
        lambda c: [directory("d", xattrs={"trusted.overlay.redirect": f"{c}"})],
        refused="trusted.overlay.redirect",
    ),
    Case(
        "OverlayMetacopyXattrOnFile",
        lambda c: [file("f", b"", xattrs={"trusted.overlay.metacopy": ""})],
        refused="trusted.overlay.metacopy",
    ),
    # overlayfs mounted with `userxattr` (rootless) reads the same metadata from user.overlay.*.
    Case(
        "UserOverlayOpaque",
        lambda c: [directory("d", xattrs={"user.overlay.opaque": "y"})],
        refused="user.overlay.opaque",
    ),
    Case(
        "UserOverlayRedirect",
        lambda c: [directory("d", xattrs={"user.overlay.redirect": f"{c}"})],
        refused="user.overlay.redirect",
    ),
    Case(
        "UserOverlayMetacopy",
        lambda c: [file("f", b"", xattrs={"user.overlay.metacopy": ""})],
        refused="user.overlay.metacopy",
    ),
    Case(
        "UserOverlayWhiteout",
        lambda c: [file("w", b"", xattrs={"user.overlay.whiteout": ""})],
        refused="user.overlay.whiteout",
    ),
    Case("SymlinkWithEmptyTarget", lambda c: [symlink("x", "")], refused="empty or invalid target"),
]


def _mode_is(path: Path, mode: int) -> None:
    assert stat.S_IMODE(path.lstat().st_mode) == mode, f"{path}: mode {oct(path.lstat().st_mode)}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_breakout(case: Case, tmp_path: Path) -> None:
    canaries = Canaries(tmp_path)
    blob = write_layer(tmp_path, tar(*case.entries(str(canaries.canary))), "gzip", name="layer.blob")
    canaries.arm()
    try:
        apply_layer(blob.path, blob.media_type, blob.digest, blob.diff_id, canaries.target)
        error: UnsafeLayer | None = None
    except UnsafeLayer as exc:
        error = exc
    canaries.assert_untouched()  # first: whatever the outcome, nothing outside may have changed
    if case.refused is not None:
        assert error is not None, f"the layer was applied; expected a refusal mentioning {case.refused!r}"
        assert case.refused in str(error)
        assert str(blob.digest) in str(error), "the message names the layer"
    else:
        assert error is None, f"unexpected refusal: {error}"
        assert case.check is not None
        case.check(canaries.target)


def test_a_whiteout_of_a_lower_symlink_is_a_device_not_a_deletion_through_it(tmp_path: Path) -> None:
    """containerd's WhiteoutSymlink: the lower layer's symlink is in another snapshot; nothing is followed."""
    canaries = Canaries(tmp_path, targets=2)
    lower = write_layer(tmp_path, tar(symlink("localetc", f"{canaries.canary}/etc")), name="lower.blob")
    upper = write_layer(tmp_path, tar(whiteout("localetc")), name="upper.blob")
    canaries.arm()
    apply_layer(lower.path, lower.media_type, lower.digest, lower.diff_id, canaries.targets[0])
    apply_layer(upper.path, upper.media_type, upper.digest, upper.diff_id, canaries.targets[1])
    assert stat.S_ISCHR((canaries.targets[1] / "localetc").lstat().st_mode)
    canaries.assert_untouched()


def test_writing_below_a_lower_layers_symlink_stays_in_this_snapshot(tmp_path: Path) -> None:
    """A file under a path that a *lower* layer made a symlink goes into a real directory here."""
    canaries = Canaries(tmp_path, targets=2)
    lower = write_layer(tmp_path, tar(symlink("localetc", f"{canaries.canary}/etc")), name="lower.blob")
    upper = write_layer(tmp_path, tar(file("localetc/unbroken", b"broken")), name="upper.blob")
    canaries.arm()
    apply_layer(lower.path, lower.media_type, lower.digest, lower.diff_id, canaries.targets[0])
    apply_layer(upper.path, upper.media_type, upper.digest, upper.diff_id, canaries.targets[1])
    assert (canaries.targets[1] / "localetc/unbroken").read_bytes() == b"broken"
    assert is_dir("localetc")(canaries.targets[1]) is None
    canaries.assert_untouched()


def test_nothing_escapes_even_when_the_target_path_itself_goes_through_a_symlink(tmp_path: Path) -> None:
    """The caller's own path may contain symlinks; only the layer's symlinks are distrusted."""
    canaries = Canaries(tmp_path)
    (tmp_path / "via").symlink_to(canaries.target)
    blob = write_layer(tmp_path, tar(directory("etc"), file("etc/passwd", b"mine")), name="layer.blob")
    canaries.arm()
    apply_layer(blob.path, blob.media_type, blob.digest, blob.diff_id, tmp_path / "via")
    assert (canaries.target / "etc/passwd").read_bytes() == b"mine"
    canaries.assert_untouched()
