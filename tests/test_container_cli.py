"""The container commands end to end: reference → admission (policy, real registry) → runc → exit code.

Everything goes through `trust.cli.app.main`, in process; the container's own output arrives on this
process's file descriptors (capfd). One busybox image is pushed per module, under a repository the
policy accepts, and again under one that requires a signature.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.images import BUSYBOX_APPLETS, DIR, Device, Layer, build_image, busybox_layer, push_image
from support.registry import Registry

from pull.clients import RegistryClients
from pull.reference import Reference
from run.runtime import CgroupMode, cgroup_mode
from trust.cli.app import main
from trust.cosign.signing import sign_image
from trust.keys.keyfiles import KeySigner, generate_keypair, load_private_key

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)"
)


@dataclass(frozen=True)
class Setup:
    store: Path
    policy: Path
    open_ref: str
    """Pinned reference the policy accepts without a signature."""
    tagged: str
    """The same image by tag."""
    digest: str
    signed_ref: str
    unsigned_ref: str
    """Both under a scope that requires a signature by key `a`; only the first is signed."""

    def trust(self, *args: str) -> int:
        return main([args[0], "--store", str(self.store), *args[1:]])

    def admit(self, command: str, *args: str) -> int:
        return main([command, "--store", str(self.store), "--policy", str(self.policy), *args])


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("container-cli")
    image = build_image([busybox_layer(applets=(*BUSYBOX_APPLETS, "wc"))], cmd=["sh", "-c", "echo image cmd"])
    opened = push_image(registry, "t/cli-open", image, tag="v1")
    signed = push_image(registry, "t/cli-signed", image, tag="v1")
    unsigned = push_image(
        registry,
        "t/cli-signed",
        build_image([busybox_layer()], cmd=["sh", "-c", "echo unsigned"]),
        tag="v2",
    )
    private_pem, public_pem = generate_keypair(b"")
    (folder / "a.pub").write_bytes(public_pem)
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(signed.by_digest), KeySigner(load_private_key(private_pem, b"")))
    policy = folder / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"authorities:\n  a:\n    cosign-keys: [{folder / 'a.pub'}]\n"
        "rules:\n"
        f"  - scope: {registry.host}/t/cli-open\n    insecure-accept-anything: true\n"
        f"  - scope: {registry.host}/t/cli-signed\n    signed-by: [a]\n"
        "default:\n  reject: true\n"
    )
    return Setup(
        folder / "store",
        policy,
        opened.by_digest,
        opened.by_tag,
        opened.digest,
        signed.by_digest,
        unsigned.by_digest,
    )


@pytest.fixture
def cli(setup: Setup) -> Iterator[Setup]:
    """The module's setup; containers a test leaves behind are removed (and nothing stays mounted)."""
    containers = setup.store / "meta" / "containers"
    before = set(containers.iterdir()) if containers.exists() else set()
    yield setup
    if containers.exists():
        for leftover in set(containers.iterdir()) - before:
            if not leftover.name.startswith("."):
                assert setup.trust("rm", "--force", leftover.name) == 0
    with open("/proc/self/mountinfo") as mountinfo:
        assert not [line for line in mountinfo if str(setup.store) in line]


def json_out(capfd: pytest.CaptureFixture[str], code: int) -> object:
    out, err = capfd.readouterr()
    assert code == 0, err
    return json.loads(out)


# -- admission first ------------------------------------------------------------------------------


def test_a_tag_is_refused_before_any_network_call(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    # Port 1 on loopback answers nothing: contacting it would be exit 5, not 3.
    assert main(["run", "--store", str(store), "127.0.0.1:1/team/app:v1", "true"]) == 3
    err = capfd.readouterr().err
    assert "tag-only reference 127.0.0.1:1/team/app:v1 refused" in err and "trust pull" in err
    assert not store.exists()  # refusing created nothing
    assert main(["create", "--store", str(store), "127.0.0.1:1/team/app", "true"]) == 3


def test_the_refusal_names_the_digest_the_store_knows(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    assert cli.trust("pull", cli.tagged) == 0
    capfd.readouterr()
    assert cli.admit("run", cli.tagged) == 3
    err = capfd.readouterr().err
    assert f"use {cli.tagged.rsplit(':', 1)[0]}@{cli.digest}" in err


def test_an_unsigned_image_is_denied_and_nothing_is_created(
    cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    assert cli.admit("run", cli.unsigned_ref, "true") == 3
    assert "denied" in capfd.readouterr().err
    containers = cli.store / "meta" / "containers"
    assert not containers.exists() or [p for p in containers.iterdir() if not p.name.startswith(".")] == []


def test_a_signed_image_runs(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("run", "--rm", cli.signed_ref) == 0
    assert capfd.readouterr().out == "image cmd\n"


# -- running ------------------------------------------------------------------------------------


def test_run_propagates_the_exit_code_and_output(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("run", "--rm", cli.open_ref, "sh", "-c", "echo $$; echo oops >&2; exit 7") == 7
    out, err = capfd.readouterr()
    assert out == "1\n" and "oops\n" in err


def test_run_passes_environment_user_workdir_and_hostname(
    cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    code = cli.admit(
        "run", "--rm", "-e", "GREETING=hi", "-u", "65534:65534", "-w", "/tmp", "--hostname", "box",
        cli.open_ref, "sh", "-c", "echo $GREETING $(id -u) $(pwd) $(hostname)",
    )  # fmt: skip
    assert (code, capfd.readouterr().out) == (0, "hi 65534 /tmp box\n")


def test_stdin_is_passed_only_with_interactive(
    cli: Setup, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "input"
    source.write_text("one\ntwo\n")
    saved = os.dup(0)
    try:
        with open(source) as f:
            os.dup2(f.fileno(), 0)
        capfd.readouterr()
        assert cli.admit("run", "--rm", "-i", cli.open_ref, "wc", "-l") == 0
        assert capfd.readouterr().out.strip() == "2"
        os.lseek(0, 0, os.SEEK_SET)
        assert cli.admit("run", "--rm", cli.open_ref, "wc", "-l") == 0
        assert capfd.readouterr().out.strip() == "0"
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_signals_to_a_foreground_run_reach_the_container(cli: Setup) -> None:
    script = "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.05; done"
    argv = [sys.executable, "-m", "trust", "run", "--store", str(cli.store), "--policy", str(cli.policy)]
    with subprocess.Popen(
        [*argv, "--rm", cli.open_ref, "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGTERM)  # to trust, which passes it on
        assert process.wait(timeout=20) == 9
        assert process.stdout.read() == b"got TERM\n"


def test_a_detached_run_does_not_hold_the_callers_output_open(cli: Setup) -> None:
    # `ID=$(trust run -d …)` reads until EOF: the monitor must not keep our stdout or stderr.
    argv = [sys.executable, "-m", "trust", "run", "--store", str(cli.store), "--policy", str(cli.policy)]
    started = time.monotonic()
    done = subprocess.run(
        [*argv, "-d", cli.open_ref, "sleep", "30"], capture_output=True, timeout=20, check=True
    )
    assert time.monotonic() - started < 15
    container_id = done.stdout.decode().strip()
    assert len(container_id) == 64
    assert cli.trust("rm", "-f", container_id) == 0


def test_detached_lifecycle_ps_logs_inspect_stop_rm(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("run", "-d", "--name", "web", cli.open_ref, "sh", "-c", "echo hello; sleep 30") == 0
    container_id = capfd.readouterr().out.strip()
    assert len(container_id) == 64

    listed = json_out(capfd, cli.trust("ps", "--output", "json"))
    assert isinstance(listed, list)
    (entry,) = [e for e in listed if e["id"] == container_id]
    assert entry["name"] == "web" and entry["state"] == "running" and entry["exitCode"] is None
    assert entry["image"]["digest"] == cli.digest and entry["command"] == ["sh", "-c", "echo hello; sleep 30"]

    deadline = time.monotonic() + 5
    while True:
        assert cli.trust("logs", "web") == 0
        if capfd.readouterr().out == "hello\n" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert cli.trust("logs", "web") == 0 and capfd.readouterr().out == "hello\n"

    assert cli.trust("rm", "web") == 2
    assert "is running: stop it first, or use rm -f" in capfd.readouterr().err

    assert cli.trust("pause", "web") == 0
    assert capfd.readouterr().out == "web\n"
    assert json_out(capfd, cli.trust("inspect", "web"))["state"] == "paused"  # type: ignore[index]
    assert cli.trust("unpause", container_id[:8]) == 0
    capfd.readouterr()

    assert cli.trust("stop", "--time", "1", "web") == 0
    assert capfd.readouterr().out == "web\n"
    assert container_id not in json.dumps(json_out(capfd, cli.trust("ps", "--output", "json")))
    (entry,) = [e for e in json_out(capfd, cli.trust("ps", "-a", "-o", "json")) if e["id"] == container_id]  # type: ignore[attr-defined]
    assert entry["state"] == "exited" and entry["exitCode"] == 137

    inspected = json_out(capfd, cli.trust("inspect", "web"))
    assert isinstance(inspected, dict)
    assert inspected["state"] == "exited" and inspected["rootfsMounted"] is False
    assert inspected["image"]["decision"]["allowed"] is True

    assert cli.trust("ps", "-a") == 0
    table = capfd.readouterr().out
    assert "exited (137)" in table and container_id[:12] in table and "web" in table

    assert cli.trust("rm", "web") == 0
    capfd.readouterr()
    assert cli.trust("inspect", "web") == 2
    assert "no such container: web" in capfd.readouterr().err


def test_create_then_start(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("create", cli.open_ref, "sh", "-c", "echo started") == 0
    container_id = capfd.readouterr().out.strip()
    (entry,) = [e for e in json_out(capfd, cli.trust("ps", "-a", "-o", "json")) if e["id"] == container_id]  # type: ignore[attr-defined]
    assert entry["state"] == "created"
    assert cli.trust("start", container_id) == 0
    capfd.readouterr()
    assert cli.trust("logs", "--follow", container_id) == 0
    assert capfd.readouterr().out == "started\n"
    assert cli.trust("start", container_id) == 2
    assert "only a created container can be started" in capfd.readouterr().err


def test_kill_with_a_signal(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert (
        cli.admit(
            "run", "-d", cli.open_ref, "sh", "-c", "trap 'exit 42' USR1; while true; do sleep 0.05; done"
        )
        == 0
    )
    container_id = capfd.readouterr().out.strip()
    time.sleep(0.2)  # the trap is set
    assert cli.trust("kill", "--signal", "nope", container_id) == 2
    assert cli.trust("kill", "-s", "USR1", container_id) == 0
    assert cli.trust("stop", container_id) == 0  # already exiting: waits for the record
    capfd.readouterr()
    inspected = json_out(capfd, cli.trust("inspect", container_id))
    assert inspected["exitCode"] == 42  # type: ignore[index]
    assert cli.trust("kill", container_id) == 2
    assert "not running" in capfd.readouterr().err


def test_several_containers_report_each_error(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("create", "--name", "one", cli.open_ref, "true") == 0
    capfd.readouterr()
    assert cli.trust("rm", "one", "missing") == 2
    out, err = capfd.readouterr()
    assert out == "one\n" and "no such container: missing" in err


# -- refusals before admission ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--memory", "12x"], "invalid --memory"),
        (["--memory", "1m"], "at least 6m"),
        (["--cpus", "0"], "--cpus must be between"),
        (["--name", "no/slash"], "invalid container name"),
    ],
)
def test_bad_flags_are_usage_errors(
    cli: Setup, capfd: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    capfd.readouterr()
    assert cli.admit("run", *flags, cli.open_ref, "true") == 2
    assert message in capfd.readouterr().err


def test_crun_runs_with_limits(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    limit = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    if cgroup_mode() is CgroupMode.UNIFIED:
        limit = "/sys/fs/cgroup/memory.max"
    assert cli.admit("run", "--rm", "--runtime", "crun", "--memory", "64m", cli.open_ref, "cat", limit) == 0
    assert capfd.readouterr().out == f"{64 << 20}\n"


def test_a_relative_workdir_is_refused(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert cli.admit("run", "--rm", "-w", "tmp", cli.open_ref, "true") == 2
    assert "must be an absolute path" in capfd.readouterr().err
    assert cli.admit("run", "--rm", "-w", "/proc/1", cli.open_ref, "true") == 2
    assert "under /proc" in capfd.readouterr().err


# -- seccomp --------------------------------------------------------------------------------------


def test_the_default_seccomp_filter_refuses_new_namespaces(
    cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    # `unshare -U` needs no capability: only the filter stops a user namespace (and its root) inside.
    script = "grep '^Seccomp:' /proc/self/status; busybox unshare -U true; echo unshare=$?"
    capfd.readouterr()
    assert cli.admit("run", "--rm", cli.open_ref, "sh", "-c", script) == 0
    out, err = capfd.readouterr()
    assert out.split() == ["Seccomp:", "2", "unshare=1"]
    assert "Operation not permitted" in err


def test_seccomp_unconfined_removes_the_filter(cli: Setup, capfd: pytest.CaptureFixture[str]) -> None:
    script = "grep '^Seccomp:' /proc/self/status; busybox unshare -U true; echo unshare=$?"
    capfd.readouterr()
    assert (
        cli.admit("run", "--rm", "--security-opt", "seccomp=unconfined", cli.open_ref, "sh", "-c", script)
        == 0
    )
    assert capfd.readouterr().out.split() == ["Seccomp:", "0", "unshare=0"]


def test_a_custom_seccomp_profile_is_applied(
    cli: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
            }
        )
    )
    capfd.readouterr()
    script = "mkdir /tmp/x; echo mkdir=$?"
    assert (
        cli.admit("run", "--rm", "--security-opt", f"seccomp={profile}", cli.open_ref, "sh", "-c", script)
        == 0
    )
    out, err = capfd.readouterr()
    assert out == "mkdir=1\n" and "Permission denied" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("apparmor=unconfined", "unsupported --security-opt"),
        ("seccomp=/nonexistent/profile.json", "cannot read seccomp profile"),
    ],
)
def test_bad_security_options_are_usage_errors(
    cli: Setup, capfd: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    capfd.readouterr()
    assert cli.admit("run", "--security-opt", option, cli.open_ref, "true") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# -- air-gapped: run from an OCI layout -------------------------------------------------------------


def test_a_signed_image_runs_from_an_oci_layout(
    cli: Setup, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    layout = tmp_path / "usb"
    assert main(["copy", cli.signed_ref, f"oci:{layout}:v1"]) == 0
    policy = tmp_path / "layout-policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"authorities:\n  a:\n    cosign-keys: [{cli.policy.parent / 'a.pub'}]\n"
        f"rules:\n  - scope: oci:{layout}\n    signed-by: [a]\n"
        "    ignore-reference: true\n"  # signed for the registry name, run from the layout
        "default:\n  reject: true\n"
    )
    digest = cli.signed_ref.rsplit("@", 1)[1]
    store = str(tmp_path / "store")
    capfd.readouterr()
    assert main(["run", "--rm", "--store", store, "--policy", str(policy), f"oci:{layout}@{digest}"]) == 0
    assert capfd.readouterr().out == "image cmd\n"
    assert main(["run", "--rm", "--store", store, "--policy", str(policy), f"oci:{layout}:v1"]) == 3
    # An unsigned image copied into a layout is refused there too.
    unsigned = tmp_path / "unsigned"
    assert main(["copy", cli.unsigned_ref, f"oci:{unsigned}:v2"]) == 0
    policy.write_text(policy.read_text().replace(f"oci:{layout}", f"oci:{unsigned}"))
    unsigned_digest = cli.unsigned_ref.rsplit("@", 1)[1]
    assert (
        main(["run", "--rm", "--store", store, "--policy", str(policy), f"oci:{unsigned}@{unsigned_digest}"])
        == 3
    )


def test_a_warm_run_loads_no_unpacker_layout_or_bundle_code(cli: Setup) -> None:
    # Start-up time is most of a warm `trust run`: what it does not need, it must not import.
    assert cli.admit("run", "--rm", cli.signed_ref, "true") == 0  # unpacks the layers once
    args = ["run", "--rm", "--store", str(cli.store), "--policy", str(cli.policy), cli.signed_ref, "true"]
    heavy = (
        "run.unpack",
        "run.tarsafe",
        "pull.layout",
        "trust.sigstore.bundles",
        "trust.notation.signatures",
        "sigstore",
    )
    assert exit_code_and_loaded(args, heavy) == "0 []"


def exit_code_and_loaded(args: list[str], modules: tuple[str, ...], *, through_typer: bool = True) -> str:
    """`trust ARGS` in a fresh interpreter: "<exit code> [<those of `modules` it imported>]".
    Through typer (`trust.cli.app.main`), or as the executable runs `run` and `create`."""
    entry = "trust.cli.app import main" if through_typer else "trust.cli.console import run_here as main"
    code = (
        "import sys; from " + entry + "; code = main(" + repr(args) + "); "
        "print(code, [m for m in " + repr(modules) + " if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip(), done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_reused_decision_loads_no_registry_client_yaml_or_cryptography(cli: Setup, tmp_path: Path) -> None:
    # With `reuse-decisions`, a warm run's admission is a few file hashes: nothing heavy to import.
    policy = tmp_path / "policy.yaml"
    policy.write_text("reuse-decisions: 10m\n" + cli.policy.read_text())
    args = ["run", "--rm", "--store", str(cli.store), "--policy", str(policy), cli.signed_ref, "true"]
    assert main(args) == 0  # admits from scratch and records the decision
    heavy = ("httpx", "yaml", "cryptography", "policy.loader", "policy.evaluate", "pull.registry")
    assert exit_code_and_loaded(args, heavy) == "0 []"


def test_a_warm_run_as_the_executable_runs_it_makes_records_without_dataclasses(
    cli: Setup, tmp_path: Path
) -> None:
    # Python 3.11's dataclasses compile six methods per class and import inspect: ~30 ms of a new
    # process's warm run. trust's records (pull.records) make neither necessary.
    policy = tmp_path / "policy.yaml"
    policy.write_text("reuse-decisions: 10m\n" + cli.policy.read_text())
    args = ["run", "--rm", "--store", str(cli.store), "--policy", str(policy), cli.signed_ref, "true"]
    assert main(args) == 0
    loaded = exit_code_and_loaded(args, ("dataclasses", "inspect", "typer"), through_typer=False)
    assert loaded == "0 []"


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        (["/no/such/program"], 127, "no such file or directory"),
        (["no-such-command"], 127, "not found in $PATH"),
        (["/etc"], 126, "permission denied"),
    ],
)
def test_a_command_that_cannot_start_exits_127_or_126_as_docker_does(
    cli: Setup, capfd: pytest.CaptureFixture[str], command: list[str], code: int, said: str
) -> None:
    assert cli.admit("run", "--rm", cli.signed_ref, *command) == code
    err = capfd.readouterr().err
    assert said in err and "Traceback" not in err


def test_device_nodes_in_a_layer_are_skipped_said_and_audited(
    registry: Registry, cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every debootstrap or `docker import` rootfs has /dev/console, /dev/null …: the image runs,
    the nodes are not created (the container's /dev is the runtime's), and it is said and recorded."""
    devices = Layer.from_files(
        {
            "dev": DIR,
            "dev/console": Device("char", 5, 1),
            "dev/null": Device("char", 1, 3),
            "dev/sda": Device("block", 8, 0),
        }
    )
    image = build_image([busybox_layer(), devices], cmd=["sh", "-c", "echo ran"])
    pushed = push_image(registry, "t/cli-open", image, tag="devices")
    capfd.readouterr()
    assert cli.admit("run", "--rm", pushed.by_digest, "sh", "-c", "test -c /dev/null && echo null-ok") == 0
    out, err = capfd.readouterr()
    assert "null-ok" in out
    assert "3 device node(s) not created (/dev/console, /dev/null, /dev/sda)" in err
    audit = [
        "audit",
        "--output",
        "json",
        "--image",
        pushed.by_digest,
        "--offline",
        "--policy",
        str(cli.policy),
    ]
    assert cli.trust(*audit) == 0
    report = json.loads(capfd.readouterr().out)
    assert "3 device node(s) not created" in json.dumps(report)


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_sys_fs_cgroup_is_read_only_inside(
    cli: Setup, capfd: pytest.CaptureFixture[str], runtime: str
) -> None:
    # On this cgroup v1 host the runtime mounts a tmpfs at /sys/fs/cgroup: it must not be writable.
    script = (
        "touch /sys/fs/cgroup/x 2>/dev/null && echo file; mkdir /sys/fs/cgroup/y 2>/dev/null && echo dir; "
        "ls /sys/fs/cgroup >/dev/null && echo listed"
    )
    capfd.readouterr()
    assert cli.admit("run", "--rm", "--runtime", runtime, cli.signed_ref, "sh", "-c", script) == 0
    assert capfd.readouterr().out == "listed\n"


@pytest.mark.parametrize("action", ["stop", "kill", "pause"])
def test_lifecycle_commands_racing_rm_force_exit_0_or_2_never_1(
    action: str, cli: Setup, capfd: pytest.CaptureFixture[str]
) -> None:
    """A container removed (or exited) while `stop`/`kill`/`pause` acts on it is the user's race:
    exit 2 (or 0 when the action completed first), never 1 with the runtime's raw message."""
    trust = str(Path(sys.executable).with_name("trust"))
    env = {**os.environ, "TRUST_STORE": str(cli.store)}
    env.pop("TRUST_AGENT_SOCKET", None)
    codes: list[int] = []
    for _ in range(4):
        capfd.readouterr()
        assert cli.admit("run", "-d", cli.open_ref, "sleep", "1000") == 0
        container_id = capfd.readouterr().out.strip()
        racers = [
            subprocess.Popen([trust, "rm", "-f", container_id], env=env, stderr=subprocess.PIPE, text=True),
            *[
                subprocess.Popen([trust, action, container_id], env=env, stderr=subprocess.PIPE, text=True)
                for _ in range(3)
            ],
        ]
        for racer in racers:
            _, err = racer.communicate(timeout=60)
            assert "Traceback" not in err and err.count("\n") <= 1, err
            codes.append(racer.returncode)
            assert racer.returncode in (0, 2), f"{racer.args}: exit {racer.returncode}: {err}"
    assert codes.count(0) >= 4  # every rm -f succeeded


@pytest.mark.parametrize("name", ["runc", "crun"])
def test_the_runtime_acting_on_a_container_gone_meanwhile_is_a_state_error(name: str, tmp_path: Path) -> None:
    """What the racers above meet when they lose: the runtime's "container does not exist" (or Go's
    "process already finished") becomes exit 2, not a RuntimeFailure (exit 1)."""
    from run.errors import ContainerStateError
    from run.runtime import Runtime
    from trust.cli.common import exit_code_for

    runtime = Runtime.for_store(tmp_path, name)
    assert runtime.kill("gone-container", signal.SIGKILL) is False
    for action in (runtime.pause, runtime.resume):
        with pytest.raises(ContainerStateError, match="is no longer running") as raised:
            action("gone-container")
        assert exit_code_for(raised.value) == 2


def test_a_pause_that_fails_in_unknown_words_on_a_container_gone_meanwhile_is_a_state_error(
    tmp_path: Path,
) -> None:
    """The racers' losing messages vary (runc: a freezer file removed with the cgroup); when the
    runtime then says the container is gone, that is exit 2. Fault injection: a stand-in runtime."""
    from run.errors import ContainerStateError, RuntimeFailure
    from run.runtime import Runtime

    fake = tmp_path / "runtime"
    fake.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        '  *" pause "*) echo \'level=error msg="unable to freeze: no such file"\' >&2; exit 1;;\n'
        '  *" state "*) if [ -e "$0.alive" ]; then echo \'{"status":"running","pid":1}\'; exit 0; fi;'
        " echo 'level=error msg=\"container does not exist\"' >&2; exit 1;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    runtime = Runtime("runc", tmp_path / "root", binary=str(fake))
    with pytest.raises(ContainerStateError, match="is no longer running"):
        runtime.pause("gone-container")
    (tmp_path / "runtime.alive").touch()  # still running: the failure is the runtime's, exit 1
    with pytest.raises(RuntimeFailure, match="unable to freeze"):
        runtime.pause("live-container")
