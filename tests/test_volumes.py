"""Volumes, tmpfs, a read-only root, capabilities and the everyday flags (`--env-file`, `--entrypoint`,
`--label`, `trust wait`) on real runc, through the CLI in-process. Containers use `--network none`.

The image carries symlinks that try to point a bind mount at the host: `/evil -> /etc` and
`/up -> ../../../../../../etc`. The runtime must resolve them inside the rootfs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.boxes import Box, make_box, removing_new_containers
from support.images import BUSYBOX_APPLETS, Layer, Symlink, build_image, busybox_layer
from support.registry import Registry

from trust.cli.app import main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

APPLETS = (*BUSYBOX_APPLETS, "touch", "chown", "ip", "grep", "env", "mount", "rm", "tr")


@dataclass(frozen=True)
class Setup(Box):
    def run(self, *args: str) -> int:
        return self.trust("run", "--rm", "--network", "none", *args)

    def volume(self, *args: str) -> int:
        return main(["volume", args[0], "--store", str(self.store), *args[1:]])


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("volumes")
    links = Layer.from_files(
        {
            "evil": Symlink("/etc"),
            "up": Symlink("../../../../../../etc"),
            "srv/app/hello": b"from the image\n",
        }
    )
    image = build_image(
        [busybox_layer(applets=APPLETS), links],
        entrypoint=["sh", "-c"],
        cmd=["echo from the image"],
        env=["PATH=/bin", "FROM_IMAGE=yes"],
    )
    return Setup(*make_box(registry, folder, "t/volumes-busybox", image))


@pytest.fixture
def box(setup: Setup) -> Iterator[Setup]:
    with removing_new_containers(setup):
        yield setup
    with open("/proc/self/mountinfo") as mountinfo:
        assert str(setup.store) not in mountinfo.read()


def out_of(capfd: pytest.CaptureFixture[str], code: int, expected: int = 0) -> str:
    out, err = capfd.readouterr()
    assert code == expected, err
    return out


# -- bind mounts --------------------------------------------------------------------------------


def test_a_bind_mount_is_shared_with_the_host_and_read_only_refuses_writes(
    box: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    out = out_of(
        capfd, box.run("-v", f"{tmp_path}:/data", box.image, "cat /data/in.txt; echo made > /data/out")
    )
    assert out == "from the host\n"
    assert (tmp_path / "out").read_text() == "made\n"

    code = box.run("-v", f"{tmp_path}:/data:ro", box.image, "cat /data/in.txt && echo x > /data/other")
    out, err = capfd.readouterr()
    assert code != 0 and out == "from the host\n" and "Read-only file system" in err
    assert not (tmp_path / "other").exists()

    code = box.run("--mount", f"type=bind,source={tmp_path},target=/m,readonly", box.image, "touch /m/x")
    assert code != 0 and not (tmp_path / "x").exists()
    capfd.readouterr()


@pytest.mark.parametrize("target", ["/evil", "/evil/breakout", "/up", "/up/breakout"])
def test_a_symlink_in_the_image_cannot_send_a_bind_mount_to_the_host(
    box: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path, target: str
) -> None:
    (tmp_path / "marker").write_text("mounted\n")
    host_etc = sorted(os.listdir("/etc"))
    script = f"cat {target}/marker; echo written > {target}/from-container"
    out = out_of(capfd, box.run("-v", f"{tmp_path}:{target}", box.image, script))
    assert out == "mounted\n"  # the mount happened, inside the container's own /etc
    assert sorted(os.listdir("/etc")) == host_etc  # and the host's /etc did not change
    assert not Path("/etc/from-container").exists() and not Path("/etc/breakout").exists()
    assert (tmp_path / "from-container").read_text() == "written\n"


@pytest.mark.parametrize(
    "flag",
    [
        ("-v", "../relative:/data"),
        ("-v", "bad name:/data"),
        ("-v", "/tmp:/data:nocopy"),
        ("-v", "data:/data:rx"),
        ("--mount", "type=volume,source=a/b,target=/x"),
        ("-v", "/no/such/host/path:/data"),
        ("-v", "/tmp:relative"),
        ("-v", "/tmp:/data:z"),
        ("-v", "/tmp:/"),
        ("-v", "/tmp:/proc"),
        ("--tmpfs", "/t:size=1m,exec;rm"),
        ("--tmpfs", "tmp"),
        ("--mount", "type=volume,target=/x"),
        ("--mount", "type=bind,target=/x"),
        ("--mount", "type=tmpfs,target=/x,propagation=shared"),
        ("--mount", "type=tmpfs"),
        ("--cap-add", "NOT_A_CAP"),
        ("--cap-drop", "CAP_BOGUS"),
        ("--env-file", "/no/such/file"),
        ("--label", "=value"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(
    box: Setup, capfd: pytest.CaptureFixture[str], flag: tuple[str, str]
) -> None:
    capfd.readouterr()
    assert box.run(*flag, box.image, "true") == 2
    err = capfd.readouterr().err
    assert err.startswith("trust: error:") and len(err.strip().splitlines()) == 1


# -- named volumes --------------------------------------------------------------------------------


def test_a_named_volume_is_made_on_first_use_filled_from_the_image_and_outlives_the_container(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    script = "cat /srv/app/hello; echo kept > /srv/app/written"
    assert out_of(capfd, box.run("-v", "appdata:/srv/app", box.image, script)) == "from the image\n"
    (volume,) = json.loads(out_of(capfd, box.volume("inspect", "appdata")))
    data = Path(volume["mountpoint"])
    assert sorted(os.listdir(data)) == ["hello", "written"]  # copied up, then written by the container
    assert "appdata" in out_of(capfd, box.volume("ls"))

    script = "cat /srv/app/written; echo no > /srv/app/other"
    out = out_of(
        capfd, box.run("--mount", "type=volume,src=appdata,dst=/srv/app,readonly", box.image, script), 1
    )
    assert out == "kept\n" and not (data / "other").exists()  # read-only mount: the write failed

    # A volume is kept while any container names it, even one that never started.
    assert box.trust("create", "--name", "holder", "--network", "none", "-v", "appdata:/x", box.image) == 0
    capfd.readouterr()
    assert box.volume("rm", "appdata") == 2
    assert "in use by container" in capfd.readouterr().err and data.is_dir()
    assert box.volume("prune") == 0 and "appdata" not in capfd.readouterr().out
    assert box.trust("rm", "holder") == 0
    capfd.readouterr()
    assert out_of(capfd, box.volume("rm", "appdata")) == "appdata\n"
    assert not data.parent.exists()
    assert box.volume("inspect", "appdata") == 2


def test_nocopy_and_an_existing_volume_are_not_filled_from_the_image(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert out_of(capfd, box.run("-v", "empty:/srv/app:nocopy", box.image, "ls -A /srv/app")) == ""
    assert out_of(capfd, box.volume("create", "made", "--label", "team=db")) == "made\n"
    assert out_of(capfd, box.run("-v", "made:/srv/app", box.image, "ls -A /srv/app")) == ""
    (volume,) = json.loads(out_of(capfd, box.volume("inspect", "made")))
    assert volume["labels"] == {"team": "db"}
    assert sorted(out_of(capfd, box.volume("prune")).split()) == ["empty", "made"]


@pytest.mark.parametrize("target", ["/evil", "/up"])
def test_copy_up_follows_the_images_symlinks_inside_the_image(
    box: Setup, capfd: pytest.CaptureFixture[str], target: str
) -> None:
    """`/evil -> /etc`: the volume is filled from the image's /etc (it has none), never the host's."""
    name = f"breakout{target.strip('/')}"
    assert box.run("-v", f"{name}:{target}", box.image, "true") == 0
    (volume,) = json.loads(out_of(capfd, box.volume("inspect", name)))
    assert os.listdir(volume["mountpoint"]) == []
    assert box.volume("rm", name) == 0


def test_two_mounts_on_one_destination_are_refused(box: Setup, tmp_path: Path) -> None:
    assert box.run("-v", f"{tmp_path}:/data", "--tmpfs", "/data", box.image, "true") == 2


# -- tmpfs and read-only root ---------------------------------------------------------------------


def test_read_only_root_with_a_tmpfs(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    code = box.run("--read-only", box.image, "touch /made-here")
    assert code != 0 and "Read-only file system" in capfd.readouterr().err
    script = "touch /tmp/ok && grep ' /tmp ' /proc/mounts && grep ' /big ' /proc/mounts"
    out = out_of(
        capfd,
        box.run(
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--mount",
            "type=tmpfs,target=/big,tmpfs-size=2m",
            box.image,
            script,
        ),
    )
    tmp_line, big_line = out.splitlines()
    assert tmp_line.startswith("tmpfs /tmp tmpfs rw,nosuid,nodev,noexec")
    assert "size=2048k" in big_line
    out = out_of(capfd, box.run("--tmpfs", "/t:size=1m,mode=700,exec", box.image, "grep ' /t ' /proc/mounts"))
    assert "size=1024k" in out and "mode=700" in out and "noexec" not in out


# -- capabilities ---------------------------------------------------------------------------------


def test_cap_drop_all_makes_chown_fail_and_cap_add_net_admin_allows_ip_link(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert box.run(box.image, "touch /f && chown 65534 /f") == 0
    assert box.run("--cap-drop", "ALL", box.image, "touch /f && chown 65534 /f") != 0
    assert box.run("--cap-drop", "chown", box.image, "touch /f && chown 65534 /f") != 0
    capfd.readouterr()
    assert box.run(box.image, "ip link set lo down") != 0
    assert box.run("--cap-add", "NET_ADMIN", box.image, "ip link set lo down") == 0
    assert box.run("--cap-drop", "ALL", "--cap-add", "net_admin", box.image, "ip link set lo down") == 0
    capfd.readouterr()
    out = out_of(
        capfd,
        box.run("--cap-drop", "ALL", "--cap-add", "NET_ADMIN", box.image, "grep CapEff /proc/self/status"),
    )
    assert out.split()[1] == f"{1 << 12:016x}"  # CAP_NET_ADMIN is capability 12, alone


# -- everyday flags -------------------------------------------------------------------------------


def test_env_file_entrypoint_and_labels(
    box: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# settings\nONE=1\n\nTWO=two words\nPASSED\nOVERRIDDEN=file\n")
    monkeypatch.setenv("PASSED", "from the caller")
    script = 'echo "$ONE|$TWO|$PASSED|$OVERRIDDEN|$FROM_IMAGE"'
    code = box.run("--env-file", str(env_file), "-e", "OVERRIDDEN=flag", box.image, script)
    assert out_of(capfd, code) == "1|two words|from the caller|flag|yes\n"

    assert out_of(capfd, box.run(box.image)) == "from the image\n"
    assert out_of(capfd, box.run("--entrypoint", "echo", box.image, "hello")) == "hello\n"
    assert out_of(capfd, box.run("--entrypoint", "echo", box.image)) == "\n"  # the image's Cmd is dropped
    assert (
        out_of(capfd, box.run("--entrypoint", "", box.image, "echo", "no", "entrypoint")) == "no entrypoint\n"
    )

    assert box.trust("create", "--network", "none", "--label", "team=web", "-l", "tier=", box.image) == 0
    container_id = capfd.readouterr().out.strip()
    doc = json.loads(out_of(capfd, box.trust("inspect", container_id)))
    assert doc["labels"] == {"team": "web", "tier": ""}
    config = json.loads((Path(doc["paths"]["bundle"]) / "config.json").read_text())
    assert config["annotations"]["team"] == "web"


def test_wait_prints_the_exit_code(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert (
        box.trust("run", "-d", "--network", "none", "--name", "waited", box.image, "sleep 0.3; exit 3") == 0
    )
    capfd.readouterr()
    assert out_of(capfd, box.trust("wait", "waited")) == "3\n"
    assert out_of(capfd, box.trust("wait", "waited")) == "3\n"  # exited already: at once
    assert box.trust("wait", "no-such-container") == 2


def test_stop_signal_and_no_new_privileges(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    script = "trap 'exit 42' USR1; while true; do sleep 0.05; done"
    code = box.trust(
        "run", "-d", "--network", "none", "--name", "sig", "--stop-signal", "usr1", box.image, script
    )
    assert code == 0
    assert box.trust("stop", "-t", "10", "sig") == 0
    capfd.readouterr()
    assert out_of(capfd, box.trust("wait", "sig")) == "42\n"  # USR1, not TERM then KILL (137)
    assert box.run("--stop-signal", "NOPE", box.image, "true") == 2
    assert box.run("--security-opt", "no-new-privileges", box.image, "true") == 0
    assert box.run("--security-opt", "no-new-privileges:true", box.image, "true") == 0
    assert box.run("--security-opt", "no-new-privileges=false", box.image, "true") == 2


def test_init_is_pid_1_reaps_orphans_and_passes_the_exit_code(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    # The inner shell leaves a background sleep orphaned: it is re-parented to PID 1 when it ends.
    script = (
        "sh -c 'sleep 0.1 &'; sleep 0.6; tr '\\0' ' ' < /proc/1/cmdline; echo; "
        "cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z '; exit 4"
    )
    code = box.run("--init", box.image, script)
    out = out_of(capfd, code, expected=4)
    first, zombies = out.splitlines()
    assert first.startswith("/dev/init -- sh -c")
    assert zombies == "0"


def test_restart_on_failure_2_restarts_twice_then_reports_exited(
    box: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    code = box.trust(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        box.image,
        "echo run; exit 3",
    )
    assert code == 0
    capfd.readouterr()
    assert out_of(capfd, box.trust("wait", "flaky")) == "3\n"
    assert out_of(capfd, box.trust("logs", "flaky")) == "run\nrun\nrun\n"  # the first run and two restarts
    doc = json.loads(out_of(capfd, box.trust("inspect", "flaky")))
    assert (doc["state"], doc["restartCount"], doc["exitCode"]) == ("exited", 2, 3)


def test_restart_always_until_stop(box: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    code = box.trust(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "again",
        "--restart",
        "always",
        box.image,
        "echo run; sleep 0.1",
    )
    assert code == 0
    deadline = time.monotonic() + 20
    while True:
        capfd.readouterr()
        assert box.trust("logs", "again") == 0
        if capfd.readouterr().out.count("run") >= 3:
            break  # exit 0 restarts too
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert box.trust("stop", "-t", "1", "again") == 0
    capfd.readouterr()
    doc = json.loads(out_of(capfd, box.trust("inspect", "again")))
    assert doc["state"] == "exited" and doc["restartCount"] >= 2
    time.sleep(0.5)
    assert json.loads(out_of(capfd, box.trust("inspect", "again")))["state"] == "exited"  # stays stopped


@pytest.mark.parametrize("policy", ["sometimes", "on-failure:0", "always:3", "on-failure:x"])
def test_bad_restart_policies(box: Setup, policy: str) -> None:
    assert box.trust("create", "--network", "none", "--restart", policy, box.image) == 2


def test_restart_conflicts_with_rm(box: Setup) -> None:
    assert box.trust("run", "-d", "--rm", "--network", "none", "--restart", "always", box.image) == 2


# -- trust cp -------------------------------------------------------------------------------------


@pytest.fixture
def running(box: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[Setup]:
    """`cpbox`: running, with the host's tmp_path/vol mounted at /vol."""
    (tmp_path / "vol").mkdir()
    code = box.trust(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "cpbox",
        "-v",
        f"{tmp_path / 'vol'}:/vol",
        box.image,
        "sleep 60",
    )
    assert code == 0
    capfd.readouterr()
    yield box


def test_cp_both_ways_files_and_directories(
    running: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("to the container\n")
    assert running.trust("cp", str(tmp_path / "in.txt"), "cpbox:/tmp/in.txt") == 0
    assert out_of(capfd, running.trust("exec", "cpbox", "cat", "/tmp/in.txt")) == "to the container\n"
    assert running.trust("cp", "cpbox:/tmp/in.txt", str(tmp_path / "back.txt")) == 0
    assert (tmp_path / "back.txt").read_text() == "to the container\n"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("nested\n")
    (tree / "link").symlink_to("/etc/hostname")
    assert running.trust("cp", str(tree), "cpbox:/tmp") == 0  # an existing directory: goes inside it
    out = out_of(capfd, running.trust("exec", "cpbox", "cat", "/tmp/tree/sub/f", "/tmp/tree/link"))
    assert out.startswith("nested\n")  # and the absolute symlink resolves in the container
    assert running.trust("cp", "cpbox:/tmp/tree", str(tmp_path / "copy")) == 0  # new name: becomes it
    assert (tmp_path / "copy" / "sub" / "f").read_text() == "nested\n"
    assert os.readlink(tmp_path / "copy" / "link") == "/etc/hostname"

    assert running.trust("cp", str(tmp_path / "in.txt"), "cpbox:/vol/through-the-mount") == 0
    assert (tmp_path / "vol" / "through-the-mount").read_text() == "to the container\n"


def test_cp_resolves_symlinks_inside_the_container(
    running: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert running.trust("cp", "cpbox:/evil/passwd", str(tmp_path / "passwd")) == 0  # /evil -> /etc
    assert (tmp_path / "passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\nnobody:")
    assert (tmp_path / "passwd").read_bytes() != Path("/etc/passwd").read_bytes()
    (tmp_path / "planted").write_text("planted\n")
    assert running.trust("cp", str(tmp_path / "planted"), "cpbox:/up/trust-cp-breakout") == 0
    assert not Path("/etc/trust-cp-breakout").exists()  # the container's /etc got it, not the host's
    assert out_of(capfd, running.trust("exec", "cpbox", "cat", "/etc/trust-cp-breakout")) == "planted\n"


def test_cp_refusals(running: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for source, destination in [
        ("cpbox:/no/such/file", str(tmp_path / "x")),
        ("cpbox:/dev/null", str(tmp_path / "null")),  # a device node never lands on the host
        (str(tmp_path / "missing"), "cpbox:/tmp/x"),
        (str(tmp_path), str(tmp_path / "y")),
        ("cpbox:/tmp", "cpbox:/tmp"),
        ("cpbox:relative", str(tmp_path / "z")),
        ("no-such-container:/etc/passwd", str(tmp_path / "w")),
    ]:
        capfd.readouterr()
        assert running.trust("cp", source, destination) == 2, (source, destination)
        err = capfd.readouterr().err
        assert err.startswith("trust: error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "null").exists()
    assert running.trust("stop", "-t", "0", "cpbox") == 0
    assert running.trust("cp", "cpbox:/etc/passwd", str(tmp_path / "after")) == 2  # exited: not mounted
