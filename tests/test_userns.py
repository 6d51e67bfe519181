"""User-namespaced containers (`--uidmap`, `--gidmap`, `--userns=auto`) with real runc, idmapped
snapshot mounts and overlayfs, through the CLI in-process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.boxes import Box, make_box, removing_new_containers
from support.images import BUSYBOX_APPLETS, Layer, build_image, busybox_layer
from support.registry import Registry

from pull.errors import UsageError
from run.record import USERNS_ROOT
from run.userns import IdRange, UserNamespace, UsernsRequest, userns_request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Box:
    image = build_image(
        [
            busybox_layer(applets=(*BUSYBOX_APPLETS, "id", "stat", "touch")),
            Layer.from_files({"etc/motd": b"from the image\n"}),
        ],
        cmd=["sh"],
        env=["PATH=/bin"],
    )
    return Box(*make_box(registry, tmp_path_factory.mktemp("userns"), "t/userns-busybox", image))


@pytest.fixture
def box(setup: Box) -> Iterator[Box]:
    with removing_new_containers(setup):
        yield setup


def output(capfd: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capfd.readouterr()
    assert code == 0, err
    return out


def mounted_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if line.split()[4].startswith(str(path))]


def test_root_in_the_container_is_an_unprivileged_host_user(
    box: Box, capfd: pytest.CaptureFixture[str]
) -> None:
    script = (
        "id -u; cat /proc/self/uid_map; stat -c %u /etc/motd; echo changed >> /etc/motd; touch /new; sleep 30"
    )
    code = box.trust("run", "-d", "--name", "mapped", "--network", "none", "--uidmap", "0:100000:65536",
                     box.image, "sh", "-c", script)  # fmt: skip
    container_id = output(capfd, code).strip()
    doc = json.loads(output(capfd, box.trust("inspect", "mapped")))
    assert doc["userNamespace"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert doc["userNamespace"]["gidMappings"] == doc["userNamespace"]["uidMappings"]  # --gidmap: as --uidmap
    logs = box.store / "meta" / "containers" / container_id / "stdout.log"
    for _ in range(100):
        if logs.read_text().count("\n") >= 3:
            break
        subprocess.run(["sleep", "0.05"], check=True)
    uid, mapping, owner = logs.read_text().splitlines()[:3]
    assert uid == "0" and mapping.split() == ["0", "100000", "65536"]
    assert owner == "0"  # the image's root-owned files show as the container's root's
    # From the host: what the container wrote belongs to host uid 100000 (copied up or made).
    upper = box.store / "meta" / "containers" / container_id / "upper"
    assert (upper / "new").stat().st_uid == 100000 and (upper / "etc" / "motd").stat().st_uid == 100000
    assert (upper / "new").stat().st_gid == 100000
    rootfs = USERNS_ROOT / container_id / "rootfs"
    assert rootfs.is_mount() and (rootfs / "etc" / "motd").stat().st_uid == 100000
    assert box.trust("rm", "-f", "mapped") == 0
    assert mounted_below(USERNS_ROOT / container_id) == []
    assert mounted_below(box.store / "meta" / "containers" / container_id) == []
    assert not (USERNS_ROOT / container_id).exists()


def test_a_host_directory_owned_by_root_stays_out_of_reach(
    box: Box, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    script = "stat -c %u /secret; touch /secret/x 2>/dev/null && echo wrote || echo refused"
    code = box.trust("run", "--rm", "--uidmap", "0:200000:65536", "-v", f"{secret}:/secret", box.image,
                     "sh", "-c", script)  # fmt: skip
    assert output(capfd, code).split() == ["65534", "refused"]  # nobody's, and root in there is not root
    assert list(secret.iterdir()) == []


def test_userns_auto_gives_two_containers_disjoint_blocks(
    box: Box, capfd: pytest.CaptureFixture[str]
) -> None:
    blocks = []
    for name in ("auto-one", "auto-two"):
        assert box.trust("create", "--name", name, "--network", "none", "--userns", "auto", box.image) == 0
        capfd.readouterr()
        doc = json.loads(output(capfd, box.trust("inspect", name)))
        [block] = doc["userNamespace"]["uidMappings"]
        assert block["containerID"] == 0 and block["size"] == 65536 and block["hostID"] >= 100000
        blocks.append((block["hostID"], block["hostID"] + block["size"]))
    (a_start, a_end), (b_start, b_end) = blocks
    assert a_end <= b_start or b_end <= a_start
    assert box.trust("start", "auto-one") == 0
    for name in ("auto-one", "auto-two"):
        assert box.trust("rm", "-f", name) == 0
    # the blocks are free again: the next auto container may take the first one
    assert box.trust("create", "--name", "auto-three", "--userns", "auto:size=1000", box.image) == 0
    capfd.readouterr()
    doc = json.loads(output(capfd, box.trust("inspect", "auto-three")))
    assert doc["userNamespace"]["uidMappings"][0]["size"] == 1000
    assert box.trust("rm", "-f", "auto-three") == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--uidmap", "0:100000"], "use CONTAINERID:HOSTID:SIZE"),
        (["--uidmap", "1:100000:10"], "maps no host id to the container's root"),
        (["--uidmap", "0:100000:10", "--uidmap", "5:200000:10"], "container ranges overlap"),
        (["--uidmap", "0:100000:10", "--uidmap", "20:100005:10"], "host ranges overlap"),
        (["--uidmap", "0:4294967290:10"], "ids run from 0 to 2^32-2"),
        (["--userns", "auto", "--uidmap", "0:1:1"], "contradict"),
        (["--userns", "keep-id"], "use host, auto or auto:size=N"),
        (["--userns", "auto:size=0"], "its only option is size=N"),
    ],
)
def test_bad_user_namespace_flags_are_usage_errors(
    box: Box, capfd: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    assert box.trust("run", "--rm", *flags, box.image, "true") == 2
    assert says in capfd.readouterr().err


def test_auto_skips_blocks_in_use_and_unaligned_neighbours() -> None:
    taken = [UserNamespace((IdRange(0, 100000, 65536),), (IdRange(0, 100000, 65536),)),
             UserNamespace((IdRange(0, 170000, 10),), (IdRange(0, 170000, 10),))]  # fmt: skip
    picked = UsernsRequest(auto_size=65536).resolve(taken)
    assert picked.uids == (IdRange(0, 196608, 65536),)  # 3 * 65536: the first aligned block past both
    assert userns_request(None, [], []) is None and userns_request("host", [], []) is None
    with pytest.raises(UsageError):
        UsernsRequest(auto_size=2**32 - 100001).resolve(taken)
