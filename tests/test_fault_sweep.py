"""The sweep (issue 20, class 2): every command that touches the store, against a full disk, a
read-only store and a store path that is missing and cannot be made.

Each command runs as the real `trust` executable, in a process of its own killed after `BOUND`
seconds (a hang fails the test instead of holding it), and must exit with the code of the table
(docs/security.md "Exit codes"; never 1, the internal-error code), print exactly one
`trust: error: …` line when it fails, never a traceback, and leave nothing half-written:

- full disk: what reads works; what frees space (`rm`, `rmi`, `gc`) works; what must write more
  than a record (`run`, `create`) is exit 5 naming the disk; nothing half-written remains, and once
  space is free again the store audits clean and runs.
- read-only store: what reads works (`audit` says it records nothing); what writes is exit 5, one
  line, before doing anything (container commands are refused up front); the store is unchanged.
- missing store that cannot be made: every command is exit 2 ("cannot open store …").

The commands are enumerated from the CLI: `test_the_sweep_covers_every_store_command` fails when
a command gains `--store` without joining the sweep. `wait` is the one left out: on a created
container it waits, by design, for a start that no fault here brings.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from support.images import build_image, busybox_layer, push_image
from support.registry import Registry

from trust.cli.app import app

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs and read-only bind mounts need root")

TRUST = str(Path(sys.executable).with_name("trust"))
BOUND = 60.0
"""Seconds any one command may take under a fault."""

# Each command that takes --store, with the arguments it gets here, in the order they run: what
# looks at the created container first, then what changes it, then what removes it. IMAGE is the
# image in the store, POLICY an accept-anything policy, CONTAINER a created (not started) container.
STORE_COMMANDS: dict[str, list[str]] = {
    "images": ["images"],
    "ps": ["ps", "--all"],
    "inspect": ["inspect", "CONTAINER"],
    "logs": ["logs", "CONTAINER"],
    "port": ["port", "CONTAINER"],
    "top": ["top", "CONTAINER"],
    "stats": ["stats", "--no-stream", "CONTAINER"],
    "cp": ["cp", "CONTAINER:/etc/passwd", "OUTSIDE"],
    "exec": ["exec", "CONTAINER", "true"],
    "attach": ["attach", "CONTAINER"],
    "audit": ["audit", "--policy", "POLICY"],
    "audit --offline": ["audit", "--offline", "--policy", "POLICY"],
    "verify": ["verify", "--policy", "POLICY", "IMAGE"],
    "verify --pull": ["verify", "--pull", "--policy", "POLICY", "IMAGE"],
    "verify-attestation": ["verify-attestation", "--policy", "POLICY", "IMAGE"],
    "policy explain": ["policy", "explain", "--policy", "POLICY", "IMAGE"],
    "pull": ["pull", "IMAGE"],
    "run": ["run", "--rm", "--policy", "POLICY", "IMAGE", "true"],
    "create": ["create", "--policy", "POLICY", "IMAGE", "true"],
    "start": ["start", "CONTAINER"],
    "pause": ["pause", "CONTAINER"],
    "unpause": ["unpause", "CONTAINER"],
    "kill": ["kill", "CONTAINER"],
    "stop": ["stop", "CONTAINER"],
    "rm": ["rm", "--force", "CONTAINER"],
    "rmi": ["rmi", "IMAGE"],
    "prune --dry-run": ["prune", "--dry-run"],
    "gc": ["gc"],
    "volume create": ["volume", "create", "swept"],
    "volume ls": ["volume", "ls"],
    "volume inspect": ["volume", "inspect", "swept"],
    "volume rm": ["volume", "rm", "swept"],
    "volume prune": ["volume", "prune"],
}
GROUPS = ("policy", "volume")
"""Commands that are a group's: `--store` goes after the subcommand."""
LEFT_OUT = {"wait"}

FULL = "No space left on device (the disk is full"
READ_ONLY = "is read-only"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def line(self) -> str:
        """The one `trust: error:` line ("" if the command succeeded)."""
        errors = [line for line in self.err.splitlines() if line.startswith("trust: error: ")]
        return errors[0] if errors else ""


@dataclass(frozen=True)
class Seed:
    image: str
    policy: Path


@pytest.fixture(scope="module")
def seed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    pushed = push_image(registry, "t/fault-sweep", build_image([busybox_layer()], cmd=["true"]), tag="v1")
    policy = tmp_path_factory.mktemp("sweep") / "policy.yaml"
    policy.write_text("version: 1\ndefault: {insecure-accept-anything: true}\n")
    return Seed(pushed.by_digest, policy)


def trust(*args: str, check: bool = False) -> Result:
    env = {**os.environ, "TRUST_NO_AGENT": "1"}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [TRUST, *args], capture_output=True, text=True, timeout=BOUND, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"trust {' '.join(args)} did not finish within {BOUND:g} s")
    result = Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    assert not check or result.code == 0, result.err
    return result


def sweep(store: Path, seed: Seed, container: str | None, outside: Path) -> dict[str, Result]:
    """Run every store command against `store`, checking the promises every command keeps."""
    values = {"IMAGE": seed.image, "POLICY": str(seed.policy), "OUTSIDE": str(outside)}
    values["CONTAINER"] = container or "0" * 12
    results = {}
    for name, template in STORE_COMMANDS.items():
        args = [values.get(arg, arg).replace("CONTAINER", values["CONTAINER"]) for arg in template]
        split = 2 if args[0] in GROUPS else 1
        result = trust(*args[:split], "--store", str(store), *args[split:])
        assert "Traceback" not in result.err, f"{name}: {result.err}"
        assert result.code in (0, 2, 3, 4, 5), f"{name}: exit {result.code}: {result.err}"
        if result.code:
            errors = [line for line in result.err.splitlines() if line.startswith("trust: error: ")]
            assert len(errors) == 1 and len(errors[0]) < 1100, f"{name}: {result.err}"
        results[name] = result
    return results


def codes(results: dict[str, Result]) -> dict[str, int]:
    return {name: result.code for name, result in results.items()}


@contextlib.contextmanager
def mounted(*args: str) -> Iterator[None]:
    subprocess.run(["mount", *args], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", args[-1]], check=True)


@contextlib.contextmanager
def created(store: Path, seed: Seed) -> Iterator[str]:
    """A container created (not started) in `store`; removed afterwards whatever happened."""
    policy = str(seed.policy)
    trust("create", "--store", str(store), "--policy", policy, seed.image, "sleep", "30", check=True)
    names = [p.name for p in (store / "meta" / "containers").iterdir() if not p.name.startswith(".")]
    assert len(names) == 1, names
    try:
        yield names[0]
    finally:
        trust("rm", "--force", "--store", str(store), names[0])


def tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_mode, p.lstat().st_size) for p in root.rglob("*"))


def test_the_sweep_covers_every_store_command() -> None:
    taking_store = set()

    def visit(command: Any, path: str) -> None:  # typer's click commands and groups
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                visit(sub, f"{path} {name}".strip())
        elif any("--store" in getattr(param, "opts", ()) for param in command.params):
            taking_store.add(path)

    visit(typer.main.get_command(app), "")
    swept = {" ".join(args[:2]) if args[0] in GROUPS else args[0] for args in STORE_COMMANDS.values()}
    assert taking_store == swept | LEFT_OUT


def test_every_store_command_on_a_full_disk(seed: Seed, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)):
        store = disk / "store"
        trust("pull", "--store", str(store), seed.image, check=True)
        with created(store, seed) as container:
            with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(bytes(1 << 16))
                    filler.flush()
            results = sweep(store, seed, container, tmp_path / "outside")
        found = codes(results)
        # What only reads works.
        readers = ["images", "ps", "inspect", "logs", "port", "stats", "cp", "audit", "audit --offline"]
        readers += ["volume ls", "volume prune"]
        assert {name: found[name] for name in readers} == dict.fromkeys(readers, 0)
        assert (tmp_path / "outside").read_text().startswith("root:")
        # The container is created, not running: that is the answer, whatever the disk.
        stateful = ("top", "exec", "attach")
        assert {name: found[name] for name in stateful} == dict.fromkeys(stateful, 2)
        # What must write more than a record says the disk is full.
        for name in ("run", "create"):
            assert found[name] == 5 and FULL in results[name].line, results[name].err
        # A record (pull, decision) may still fit in its file's last page, or not: then exit 5.
        for name in ("verify", "verify --pull", "verify-attestation", "policy explain", "pull", "start"):
            result = results[name]
            assert result.code == 0 or (result.code == 5 and FULL in result.line), result.err
        # What frees space works on a full disk: that is how one gets out of it.
        for name in ("stop", "rm", "rmi", "prune --dry-run", "gc"):
            assert found[name] == 0, results[name].err
        assert "removed" in results["gc"].err
        assert list((store / "ingest").glob("*.partial")) == []
        assert list((store / "meta/snapshots/tmp").iterdir()) == []
        (disk / "filler").unlink()
        assert trust("audit", "--store", str(store), "--policy", str(seed.policy)).code == 0
        trust("run", "--rm", "--store", str(store), "--policy", str(seed.policy), seed.image, check=True)


def test_every_store_command_on_a_read_only_store(seed: Seed, tmp_path: Path) -> None:
    store = tmp_path / "store"
    trust("pull", "--store", str(store), seed.image, check=True)
    view = tmp_path / "view"
    view.mkdir()
    with created(store, seed) as container:
        with mounted("--bind", str(store), str(view)):
            subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
            before = tree(view)
            results = sweep(view, seed, container, tmp_path / "outside")
            assert tree(view) == before, "a command wrote to a read-only store?"
        # The container was not touched: it is still created (the writable store says so).
        inspected = trust("inspect", "--store", str(store), container, check=True)
        assert '"created"' in inspected.out, inspected.out
    assert codes(results) == {
        "images": 0, "ps": 0, "inspect": 0, "logs": 0, "port": 0, "top": 2, "stats": 0, "cp": 0,
        "exec": 5, "attach": 2, "audit": 0, "audit --offline": 0,
        "verify": 5, "verify --pull": 5, "verify-attestation": 5, "policy explain": 5, "pull": 5,
        "run": 5, "create": 5, "start": 5, "pause": 5, "unpause": 5, "kill": 5, "stop": 5, "rm": 5,
        "rmi": 2, "prune --dry-run": 0, "gc": 5,
        "volume create": 5, "volume ls": 0, "volume inspect": 2, "volume rm": 5, "volume prune": 0,
    }  # fmt: skip
    writers = ("verify", "verify --pull", "verify-attestation", "policy explain", "pull", "run", "create")
    for name in writers:
        line = results[name].line
        assert "Read-only file system" in line and "use a writable --store" in line, line
    for name in ("exec", "start", "pause", "unpause", "kill", "stop", "rm"):
        assert f"the store {view} {READ_ONLY}: cannot " in results[name].line, results[name].err
    for name in ("audit", "audit --offline"):
        note = f"the store {view} is read-only: auditing it as it is, without recording anything"
        assert note in results[name].err, results[name].err
    assert "remove them first" in results["rmi"].line  # the container's claim comes first
    assert f"the store {view} is read-only: gc can remove nothing" in results["gc"].line


def test_every_store_command_on_a_missing_store_that_cannot_be_made(seed: Seed, tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    store = parent / "missing" / "store"
    with mounted("-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(parent)):
        results = sweep(store, seed, None, tmp_path / "outside")
    for name, result in results.items():
        assert result.code == 2, f"{name}: {result.err}"
        if name.startswith("audit"):  # audit never makes a store: there is nothing to audit
            assert result.line == f"trust: error: no store at {store}: nothing to audit", name
        else:
            assert result.line == f"trust: error: cannot open store {store}: Read-only file system", name


def test_a_missing_store_that_can_be_made_is_made(seed: Seed, tmp_path: Path) -> None:
    store = tmp_path / "new" / "store"
    assert trust("images", "--store", str(store)).code == 0
    assert (store / "index.json").is_file() and (store / "oci-layout").is_file()
    assert trust("ps", "--all", "--store", str(tmp_path / "other")).code == 0
    # But not to audit it: a mistyped path must not come back "audited 0 images", clean.
    typo = tmp_path / "typo"
    audited = trust("audit", "--store", str(typo), "--policy", str(seed.policy))
    assert (audited.code, audited.line) == (2, f"trust: error: no store at {typo}: nothing to audit")
    assert not typo.exists()


# -- commands that write elsewhere: credentials (login, logout), key files (keygen), a layout (copy) --


# What each command says, by fault. Writing content on a sick host is exit 5 (HostFault); a place
# that cannot be made at all (a layout or store directory, as `cannot open store`) is exit 2, as
# is a key's directory that does not exist (keygen makes none; login makes DOCKER_CONFIG's).
OUTSIDE_EXPECTED = {
    "full": {
        "login": (5, "cannot save the credentials in {where}/docker/config.json: No space left on device"),
        "keygen": (5, "cannot write key pair {where}/cosign.key: No space left on device"),
        "copy": (5, "No space left on device"),
        "public-key": (5, "cannot write {where}/key.pub: No space left on device"),
        "sign-blob": (5, "cannot write {where}/blob.sigstore.json: No space left on device"),
        "attest-blob": (5, "cannot write {where}/blob.att.json: No space left on device"),
    },
    "read-only": {
        "login": (5, "cannot save the credentials in {where}/docker/config.json: Read-only file system"),
        "keygen": (5, "cannot write key pair {where}/cosign.key: Read-only file system"),
        "copy": (2, "cannot create the layout {where}/layout: Read-only file system"),
        "public-key": (5, "cannot write {where}/key.pub: Read-only file system"),
        "sign-blob": (5, "cannot write {where}/blob.sigstore.json: Read-only file system"),
        "attest-blob": (5, "cannot write {where}/blob.att.json: Read-only file system"),
    },
    "missing": {
        "login": (5, "cannot save the credentials in {where}/docker/config.json: Read-only file system"),
        "keygen": (2, "cannot write key pair {where}/cosign.key: No such file or directory"),
        "copy": (2, "cannot create the layout {where}/layout: Read-only file system"),
        "public-key": (2, "cannot write {where}/key.pub: No such file or directory"),
        "sign-blob": (2, "cannot write {where}/blob.sigstore.json: No such file or directory"),
        "attest-blob": (2, "cannot write {where}/blob.att.json: No such file or directory"),
    },
}


@pytest.mark.parametrize("fault", list(OUTSIDE_EXPECTED))
def test_commands_writing_outside_the_store_under_each_fault(
    fault: str, seed: Seed, registry: Registry, tmp_path: Path
) -> None:
    """login (credentials), keygen (key files), copy (into an OCI layout), and public-key, sign-blob
    and attest-blob (their output files) write outside the store:
    on a full disk, a read-only file system, or under a directory that cannot be made, each is one
    line with the code of OUTSIDE_EXPECTED, and nothing half-written is left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    options = {"full": "size=4m", "read-only": "ro,size=1m", "missing": "ro,size=1m"}[fault]
    with mounted("-t", "tmpfs", "-o", options, "tmpfs", str(disk)):
        where = disk / "sub" / "dir" if fault == "missing" else disk
        if fault == "full":
            # The layout exists (an empty one): the copy fails writing the image, not making the place.
            (disk / "layout").mkdir()
            (disk / "layout" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
            (disk / "layout" / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
            with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(bytes(1 << 16))
                    filler.flush()
        before = tree(disk)
        keys = tmp_path / "keys"  # on a healthy disk: the fault is where the output goes
        keys.mkdir()
        blob, predicate = keys / "blob", keys / "predicate.json"
        blob.write_bytes(b"an artifact")
        predicate.write_text("{}")
        healthy = {**os.environ, "COSIGN_PASSWORD": "secret"}
        subprocess.run([TRUST, "keygen", "--output-prefix", str(keys / "k")], env=healthy, check=True)
        key = str(keys / "k.key")
        env = {**os.environ, "DOCKER_CONFIG": str(where / "docker"), "REGISTRY_AUTH_FILE": ""}
        env["COSIGN_PASSWORD"] = "secret"
        runs = {
            "login": [TRUST, "login", registry.host, "-u", "alice", "--password-stdin"],
            "keygen": [TRUST, "keygen", "--output-prefix", str(where / "cosign")],
            "copy": [TRUST, "copy", "--no-signatures", seed.image, f"oci:{where / 'layout'}:v1"],
            "public-key": [TRUST, "public-key", "--key", key, "--outfile", str(where / "key.pub")],
            "sign-blob": [TRUST, "sign-blob", "--key", key, "--tlog-upload=false", "--bundle",
                          str(where / "blob.sigstore.json"), str(blob)],
            "attest-blob": [TRUST, "attest-blob", "--key", key, "--predicate", str(predicate), "--type",
                            "https://example.com/t", "--bundle", str(where / "blob.att.json"), str(blob)],
        }  # fmt: skip
        for name, args in runs.items():
            try:
                done = subprocess.run(
                    args, input="s3cret\n", capture_output=True, text=True, timeout=BOUND, env=env
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish within {BOUND:g} s")
            assert "Traceback" not in done.stderr, f"{name}: {done.stderr}"
            errors = [line for line in done.stderr.splitlines() if line.startswith("trust: error: ")]
            assert len(errors) == 1, f"{name}: {done.stderr}"
            code, message = OUTSIDE_EXPECTED[fault][name]
            assert done.returncode == code, f"{name}: {done.stderr}"
            assert message.format(where=where) in errors[0], f"{name}: {done.stderr}"
        after = tree(disk)
        # Directories may have been made on the way (DOCKER_CONFIG, the layout's blobs/): no file was.
        added = [entry for entry in after if entry not in before and "filler" not in entry[0]]
        assert [(name, mode) for name, mode, _ in added if not stat.S_ISDIR(mode)] == [], added
