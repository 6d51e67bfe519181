"""Fixtures of the interop suite: the real peers (built by scripts/peers.sh), an OCI 1.1 registry.

- `peers` (session): paths of cosign, notation, crane, olareg, the Sigstore servers, etcd and
  kube-apiserver. The suite
  fails, never skips, when they are missing: README's test command builds them (scripts/test.sh
  runs peers.sh).
- `oci11_registry` (session): olareg on 127.0.0.1, serving the OCI 1.1 referrers API that Debian's
  registry (distribution 2.8) lacks; the suite's images live there.
- `local_sigstore` (function: the timestamp authority's fixed metrics port lets one run at a time
  on the machine, see tests/support/sigstore_services.py; a start takes under a second):
  Sigstore's own Fulcio, Rekor v2, timestamp authority and a CT log on 127.0.0.1, with the
  trusted root and signing config that describe them.
- `tool_env` (function): an environment with HOME, DOCKER_CONFIG and XDG_CONFIG_HOME of the test's
  own, so cosign and notation read no configuration of the machine and leave none behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.kube import KubeBinaries
from support.sigstore_services import LocalSigstore, SigstoreBinaries, start_local_sigstore

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Peers:
    cosign: str
    notation: str
    crane: str
    olareg: str
    sigstore: SigstoreBinaries
    kube: KubeBinaries


@pytest.fixture(scope="session")
def peers() -> Peers:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "peers.sh")], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, f"scripts/peers.sh failed:\n{out.stderr[-3000:]}"
    found = {}
    for folder in out.stdout.split():
        for tool in Path(folder).iterdir():
            found[tool.name] = str(tool)
    return Peers(
        found["cosign"],
        found["notation"],
        found["crane"],
        found["olareg"],
        SigstoreBinaries.from_folders(out.stdout.split()),
        KubeBinaries.from_folders(out.stdout.split()),
    )


@pytest.fixture
def local_sigstore(peers: Peers, tmp_path: Path) -> Iterator[LocalSigstore]:
    with start_local_sigstore(peers.sigstore, tmp_path / "sigstore") as sigstore:
        yield sigstore


@dataclass(frozen=True)
class OCI11Registry:
    host: str


@pytest.fixture(scope="session")
def oci11_registry(peers: Peers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OCI11Registry]:
    storage = tmp_path_factory.mktemp("olareg")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (storage / "olareg.log").open("wb")
    process = subprocess.Popen(
        [peers.olareg, "serve", "--addr", "127.0.0.1", "--port", str(port), "--dir", str(storage / "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "olareg did not start"
        time.sleep(0.05)
    yield OCI11Registry(host)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def tool_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COSIGN_", "NOTATION_", "SIGSTORE_"))},
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "COSIGN_PASSWORD": "interop",
        "TRUST_PASSWORD": "interop",
        "TRUST_STORE": str(tmp_path / "store"),
    }
