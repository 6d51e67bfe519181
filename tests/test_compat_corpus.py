"""Images as the ecosystem builds them, through trust: pull, sign, verify, create, run, and a root
file system identical to umoci's unpack of the same image.

Built here with the tools Debian ships: buildah (`from`/`commit` in OCI and Docker formats, `bud`
with COPY and RUN, a later layer that deletes a file, replaces a directory and changes only a
mode, a Docker manifest list and an OCI index), and skopeo conversions of them (Docker v2s2, zstd,
uncompressed). Artifacts, device nodes and umoci's own images have tests of their own
(test_artifacts.py, test_container_cli.py, test_manifest.py). buildah runs with
`--isolation chroot` and its own vfs storage under the test's folder; the busybox it puts in the
images is Debian's static one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.registry import Registry

from trust.cli.app import main

BUSYBOX = Path("/bin/busybox")
RUNTIME_PATHS = {"proc", "sys", "dev", "etc", "etc/hosts", "etc/hostname", "etc/resolv.conf", "run"}
"""Mount points: the runtime makes them at `create` (in the container's upper layer), and
`buildah run` leaves empty ones in the layer it commits; their contents are not the image's."""


def image_part(found: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {
        path: entry
        for path, entry in found.items()
        if path not in RUNTIME_PATHS and not path.startswith(("dev/", "proc/", "sys/", "run/"))
    }


NAMES = ("oci", "docker", "bud", "zstd", "plain", "bud-v2s2", "list", "index")


@dataclass
class Corpus:
    refs: dict[str, str]
    """Name -> pinned reference on the test registry."""
    folder: Path
    key: Path
    policy: Path


def run(*command: str, cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(command[:4])}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def corpus(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    folder = tmp_path_factory.mktemp("corpus")
    storage = ["--storage-driver", "vfs", "--root", str(folder / "root"), "--runroot", str(folder / "run")]

    def buildah(*args: str) -> str:
        return run("buildah", *storage, *args).strip()

    context = folder / "context"
    (context / "d").mkdir(parents=True)
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "a.txt").write_text("one\n")
    (context / "d" / "f").write_text("inner\n")
    (context / "Containerfile").write_text(
        "FROM localhost/base\n"
        "COPY a.txt /copied.txt\n"
        'RUN ["/bin/busybox", "sh", "-c", '
        '"/bin/busybox echo built > /built.txt; /bin/busybox ln -s built.txt /link"]\n'
    )
    base = buildah("from", "scratch")
    buildah("copy", base, str(context / "busybox"), "/bin/busybox")
    buildah("copy", base, str(context / "a.txt"), "/a.txt")
    buildah("copy", base, str(context / "d"), "/d")
    buildah("commit", "-q", "--format", "oci", base, "base")
    layered = buildah("from", "localhost/base")
    script = "rm /a.txt; rm -rf /d; mkdir /d; echo replaced > /d/g; chmod 0700 /bin"
    buildah("run", "--isolation", "chroot", layered, "--", "/bin/busybox", "sh", "-c", script)
    buildah("commit", "-q", "--format", "docker", layered, "layered")
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "-q",
        "-f",
        str(context / "Containerfile"),
        "-t",
        "budded",
        str(context),
    )

    host = registry.host
    plain = ["--tls-verify=false"]
    buildah("push", *plain, "--format", "oci", "localhost/base", f"docker://{host}/compat/oci:v1")
    buildah("push", *plain, "--format", "v2s2", "localhost/layered", f"docker://{host}/compat/docker:v1")
    buildah("push", *plain, "localhost/budded", f"docker://{host}/compat/bud:v1")
    for name, form in (("list", "v2s2"), ("index", "oci")):  # a manifest list and an OCI index
        buildah("manifest", "create", name)
        buildah("manifest", "add", name, "localhost/base")
        buildah(
            "manifest", "push", *plain, "--all", "--format", form, name, f"docker://{host}/compat/{name}:v1"
        )
    skopeo = ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]
    source = f"docker://{host}/compat/docker:v1"
    run(
        *skopeo,
        "--format",
        "oci",
        "--dest-compress-format",
        "zstd",
        source,
        f"docker://{host}/compat/zstd:v1",
    )
    run(*skopeo, "--format", "oci", "--dest-decompress", source, f"docker://{host}/compat/plain:v1")
    run(*skopeo, "--format", "v2s2", f"docker://{host}/compat/bud:v1", f"docker://{host}/compat/bud-v2s2:v1")

    os.environ.setdefault("TRUST_PASSWORD", "")
    key = folder / "k"
    assert main(["keygen", "--output-prefix", str(key)]) == 0
    refs = {}
    for name in NAMES:
        digest = run(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            f"docker://{host}/compat/{name}:v1",
        )
        refs[name] = f"{host}/compat/{name}@{digest.strip()}"
    policy = folder / "policy.yaml"
    policy.write_text(
        f"version: 1\nauthorities:\n  build:\n    cosign-keys: [{key}.pub]\n"
        f"rules:\n  - scope: {host}/compat/*\n    signed-by: [build]\ndefault:\n  reject: true\n"
    )
    yield Corpus(refs, folder, key, policy)


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path below `root`: type, permission bits, owner, and size+sha256 or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            if stat.S_ISREG(info.st_mode):
                detail: object = (info.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            else:
                detail = None
            found[relative] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, detail)
    return found


def umoci_tree(corpus: Corpus, name: str, work: Path) -> dict[str, tuple[object, ...]]:
    work.mkdir(parents=True, exist_ok=True)
    layout = work / "layout"
    source = f"docker://{corpus.refs[name]}"
    run("skopeo", "copy", "-q", "--src-tls-verify=false", "--multi-arch", "system", source, f"oci:{layout}:x")
    run("umoci", "unpack", "--image", f"{layout}:x", str(work / "bundle"))
    return tree(work / "bundle" / "rootfs")


@pytest.mark.parametrize("name", NAMES)
def test_pulled_verified_run_and_unpacked_as_umoci_does(
    corpus: Corpus, name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ref = corpus.refs[name]
    store = str(tmp_path / "store")
    assert main(["pull", "--store", store, ref]) == 0
    recursive = ["--recursive"] if name in ("list", "index") else []  # the platform manifest too
    assert main(["sign", "--tlog-upload=false", *recursive, "--key", f"{corpus.key}.key", ref]) == 0
    assert main(["verify", "--key", f"{corpus.key}.pub", ref]) == 0
    capfd.readouterr()
    check = "/bin/busybox cat /d/g /built.txt 2>/dev/null; /bin/busybox ls /"
    assert (
        main(
            [
                "run",
                "--rm",
                "--store",
                store,
                "--policy",
                str(corpus.policy),
                ref,
                "/bin/busybox",
                "sh",
                "-c",
                check,
            ]
        )
        == 0
    )
    out = capfd.readouterr().out
    assert ("replaced" in out) == (name in ("docker", "zstd", "plain"))
    assert ("built" in out.split()) == name.startswith("bud")

    assert (
        main(["create", "--store", store, "--policy", str(corpus.policy), ref, "/bin/busybox", "true"]) == 0
    )
    container = capfd.readouterr().out.strip()
    try:
        rootfs = Path(store) / "meta" / "containers" / container / "rootfs"
        ours = image_part(tree(rootfs))
        theirs = image_part(umoci_tree(corpus, name, tmp_path / "umoci"))
        assert "bin/busybox" in ours and ours == theirs
    finally:
        assert main(["rm", "--store", store, "--force", container]) == 0
