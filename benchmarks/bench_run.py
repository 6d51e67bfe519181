"""Benchmark: `trust run` warm and cold, against runc, skopeo and umoci on the same machine.

    .venv/bin/python benchmarks/bench_run.py [--runs 15] [--cold-runs 3] [--size-mb 320] [--skip-cold]

Warm start: a signed busybox image already pulled and unpacked. `trust run --rm IMG@sha256:…
/bin/true` (admission against keys-example/policy.yaml, signature check against the local registry,
overlay mount, bundle, runc, clean-up) against `runc run` of a bundle prepared once by `umoci
unpack` from the same store, with the same rootfs and `/bin/true`. Targets: through `trust agent`
<= 2.5, as a new process <= 4; `--network bridge -p` <= 1.5x the same with `--network none`.

Cold: a signed image of busybox plus >= 300 MB of gzip layers in 3 layers of >= 10,000 files, nothing
in the store. `trust run --rm IMG@sha256:… /bin/true` (pull, verify, unpack every layer, run) against
`skopeo copy docker://… oci:` + `umoci unpack` + `runc run` of umoci's bundle (no signature check).
Target: ratio <= 0.5. Also against GNU `tar xzf` of the same layer blobs, one after the other, from
local files into one directory (no download, no verification, no run): aim below 1.0.

Needs root (runc, overlayfs), docker-registry, runc, skopeo and umoci (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import RAW, ROOT, TRUST, Run, median, timed
from support.images import Layer, build_big_image, build_image, busybox_layer, push_image
from support.registry import Registry, start_registry

from run.runtime import cgroup_dirs

KEYS = ROOT / "keys-example"
BENCH_CGROUP = "/trust-bench"
POLICY = KEYS / "policy.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--runs", type=int, default=15, help="warm runs of each tool")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold runs of each pipeline")
    parser.add_argument("--size-mb", type=int, default=320, help="random data in the cold image")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--files", type=int, default=12000, help="files across the cold image's layers")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-warm", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/bench_run.py needs root (runc and overlay mounts)")

    work = Path(tempfile.mkdtemp(prefix="trust-bench-run-"))
    env = {**os.environ, "TRUST_PASSWORD": "trust-example"}
    try:
        registry = start_registry(work / "registry")
        try:
            if not args.skip_warm:
                warm(registry, work, env, args.runs)
            if not args.skip_cold:
                cold(registry, work, env, args)
        finally:
            registry.stop()
    finally:
        subprocess.run(["umount", "-R", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def push_signed(registry: Registry, env: dict[str, str], name: str, image_layers: list[Layer]) -> str:
    """Push an image under demo/ (the example policy's scope), sign it; return `name@sha256:…`."""
    image = build_image(image_layers, cmd=["/bin/sh"], platform="linux/amd64")
    push_image(registry, f"demo/{name}", image, tag="v1")
    pinned = f"{registry.host}/demo/{name}@{image.digest}"
    sign = [TRUST, "sign", "--tlog-upload=false", "--key", str(KEYS / "cosign.key"), pinned]
    subprocess.run(sign, env=env, check=True, capture_output=True)
    return pinned


def warm(registry: Registry, work: Path, env: dict[str, str], runs: int) -> None:
    """Six commands, alternating: `trust run` as a new process and through `trust agent`, each with
    `--network none` and with `--network bridge -p` (CNI bridge, host-local, portmap, firewall); `runc
    run` of umoci's bundle (umoci's default config: no seccomp filter, no cgroup path) and of a
    bundle with trust's own config.json (same rootfs; trust's seccomp filter, cgroups, /etc files)."""
    pinned = push_signed(registry, env, "warm", [busybox_layer()])
    store = work / "store-warm"
    base = [TRUST, "run", "--rm", "--store", str(store), "--policy", str(POLICY)]
    trust_run = [*base, "--network", "none", pinned, "/bin/true"]
    bridge_run = [*base, "--network", "bridge", "-p", "127.0.0.1:0:80", pinned, "/bin/true"]
    timed(trust_run, env=env)  # pulls and unpacks once: the runs below are warm

    umoci_bundle = work / "runc-bundle"
    tag = pinned.rsplit("@", 1)[1].replace(":", "-")
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{pinned}",
                    f"oci:{work / 'layout-warm'}:{tag}"], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["umoci", "unpack", "--image", f"{work / 'layout-warm'}:{tag}", str(umoci_bundle)],
                   check=True, capture_output=True)  # fmt: skip
    umoci_true(umoci_bundle)
    trust_bundle = trust_config_bundle(store, pinned, umoci_bundle / "rootfs", work / "trust-bundle", env)

    socket = work / "agent.sock"
    agent = subprocess.Popen([TRUST, "agent", "--socket", str(socket)], env=env, stderr=subprocess.DEVNULL)
    agent_env = {**env, "TRUST_AGENT_SOCKET": str(socket)}
    in_process_env = {**env, "TRUST_NO_AGENT": "1"}
    try:
        while not socket.exists():
            time.sleep(0.01)
        commands = {
            "trust": lambda: timed(trust_run, env=in_process_env),
            "agent": lambda: timed(trust_run, env=agent_env),
            "bridge": lambda: timed(bridge_run, env=in_process_env),
            "agent-bridge": lambda: timed(bridge_run, env=agent_env),
            "runc": lambda: runc_run(umoci_bundle),
            "runc-trust": lambda: runc_run(trust_bundle),
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for n in range(runs):
            names = list(commands) if n % 2 == 0 else list(reversed(commands))
            for name in names:
                walls[name].append(commands[name]().wall)
    finally:
        agent.terminate()
        agent.wait()
        for directory in cgroup_dirs(BENCH_CGROUP):  # runc removes each run's cgroup, not their parent
            with contextlib.suppress(OSError):
                directory.rmdir()
    m = {name: median(values) * 1000 for name, values in walls.items()}
    print(f"warm: {runs} alternating runs each, busybox image, /bin/true")
    # A new process's time is mostly the interpreter's: its build matters (docs/benchmarks.md).
    print(f"  trust runs on {os.path.realpath(sys.executable)}, Python {platform.python_version()}")
    print(f"  trust run --rm, a new process (admission + overlay + runc)  median {m['trust']:7.1f} ms")
    print(f"  trust run --rm, through `trust agent`                       median {m['agent']:7.1f} ms")
    print(f"  trust run --rm --network bridge -p 127.0.0.1:0:80, new process median {m['bridge']:7.1f} ms")
    print(f"  trust run --rm --network bridge -p 127.0.0.1:0:80, agent    median {m['agent-bridge']:7.1f} ms")
    print(f"  runc run, umoci's bundle (no seccomp filter)                median {m['runc']:7.1f} ms")
    print(f"  runc run, trust's config.json, same rootfs                  median {m['runc-trust']:7.1f} ms")
    print(
        f"  bridge -p against none (target <= 1.5): new process {m['bridge'] / m['trust']:.2f}, "
        f"agent {m['agent-bridge'] / m['agent']:.2f}"
    )
    print("  ratios (targets: through the agent <= 2.5, a new process <= 4):")
    for label, baseline in (("umoci's bundle", m["runc"]), ("trust's config", m["runc-trust"])):
        print(
            f"    against runc with {label}: new process {m['trust'] / baseline:.2f}, "
            f"agent {m['agent'] / baseline:.2f}"
        )


def runc_run(bundle: Path) -> Run:
    """`runc run` of `bundle`; a config with a cgroup path gets a fresh one (runc refuses to reuse)."""
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if "cgroupsPath" in config.get("linux", {}):
        config["linux"]["cgroupsPath"] = f"{BENCH_CGROUP}/{uuid.uuid4().hex[:12]}"
        config_path.write_text(json.dumps(config))
    return timed(["runc", "run", "--bundle", str(bundle), f"bench-{uuid.uuid4().hex[:12]}"])


def trust_config_bundle(store: Path, pinned: str, rootfs: Path, bundle: Path, env: dict[str, str]) -> Path:
    """A bundle with the config.json `trust create` writes, pointed at `rootfs` (the same image)."""
    create = [TRUST, "create", "--store", str(store), "--policy", str(POLICY), "--network", "none", pinned]
    create.append("/bin/true")
    container_id = subprocess.run(create, env=env, check=True, capture_output=True, text=True).stdout.strip()
    directory = store / "meta" / "containers" / container_id
    bundle.mkdir()
    config = json.loads((directory / "config.json").read_text())
    config["root"]["path"] = str(rootfs)
    for mount in config["mounts"]:
        source = Path(mount.get("source", ""))
        if source.parent == directory:  # /etc/hostname, hosts, resolv.conf
            shutil.copy(source, bundle / source.name)
            mount["source"] = str(bundle / source.name)
    (bundle / "config.json").write_text(json.dumps(config))
    rm = [TRUST, "rm", "--force", "--store", str(store), container_id]
    subprocess.run(rm, env=env, check=True, capture_output=True)
    return bundle


def cold(registry: Registry, work: Path, env: dict[str, str], args: argparse.Namespace) -> None:
    total = args.size_mb << 20
    file_size = max(1, total // args.files)
    big = build_big_image(work / "big", total_size=total, layers=args.layers, file_size=file_size)
    pinned = push_signed(registry, env, "cold", [busybox_layer(), *big.layers])
    blob_mb = sum(layer.size for layer in big.layers) / 1e6
    tag = pinned.rsplit("@", 1)[1].replace(":", "-")

    walls: dict[str, list[float]] = {"trust": [], "other": [], "tar": []}
    for n in range(args.cold_runs):
        order = ["trust", "other", "tar"] if n % 2 == 0 else ["tar", "other", "trust"]
        for tool in order:
            dest = work / f"cold-{tool}-{n}"
            settle(work / "registry", work / "big")
            if tool == "trust":
                command = [TRUST, "run", "--rm", "--store", str(dest), "--policy", str(POLICY),
                           "--network", "none", pinned, "/bin/true"]  # fmt: skip
                walls["trust"].append(timed(command, env=env).wall)
            elif tool == "other":
                copy = timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{pinned}",
                              f"oci:{dest}:{tag}"])  # fmt: skip
                unpack = timed(["umoci", "unpack", "--image", f"{dest}:{tag}", str(dest / "bundle")])
                run = runc_run(umoci_true(dest / "bundle"))
                walls["other"].append(copy.wall + unpack.wall + run.wall)
            else:
                dest.mkdir()
                started = time.perf_counter()
                for layer in big.layers:
                    subprocess.run(["tar", "xzf", str(layer.path), "-C", str(dest)], check=True)
                walls["tar"].append(time.perf_counter() - started)
            subprocess.run(["umount", "-R", str(dest)], capture_output=True, check=False)
            shutil.rmtree(dest, ignore_errors=True)
    t, o, g = (median(walls[name]) for name in ("trust", "other", "tar"))
    print(
        f"cold: {args.cold_runs} alternating runs each, busybox + {blob_mb:.0f} MB "
        f"in {args.layers} gzip layers, {args.files} files of {file_size} bytes"
    )
    print(f"  trust run --rm (pull, verify, unpack, run)          median {t:6.2f} s")
    print(f"  skopeo copy + umoci unpack + runc run               median {o:6.2f} s")
    print(f"  tar xzf of the {args.layers} layer blobs, one after the other  median {g:6.2f} s")
    for name in walls:
        print(f"  runs, {name}: " + " ".join(f"{wall:.2f}" for wall in walls[name]))
    print(f"  ratio trust/(skopeo+umoci+runc): {t / o:.2f}   (target <= 0.5)")
    print(f"  ratio trust/sequential tar xzf:  {t / g:.2f}   (aim < 1.0)")


def umoci_true(bundle: Path) -> Path:
    """umoci's bundle, set to run /bin/true without a terminal (as the warm runs)."""
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    config_path.write_text(json.dumps(config))
    return bundle


def settle(*inputs: Path) -> None:
    """Start each run alike: nothing dirty left by the one before, every input (the registry's blobs,
    the layer files tar reads) in the page cache. This VM drops clean pages quickly; without this
    whichever tool ran after a big delete read its input from disk."""
    subprocess.run(["sync"], check=True)
    for directory in inputs:
        for path in directory.rglob("*"):
            if path.is_file():
                with path.open("rb") as file:
                    while file.read(1 << 20):
                        pass


if __name__ == "__main__":
    main()
