"""A real Kubernetes API server on 127.0.0.1 for tests: kube-apiserver over etcd, nothing else.

Both are built by `scripts/peers.sh` (kube-apiserver from a throwaway module that pins every
`k8s.io/*` staging module by `replace`, as `go install` refuses k8s.io/kubernetes' own replace
directives; etcd from `go.etcd.io/etcd/server/v3`). No scheduler, controller manager or kubelet
runs: a Pod the API server admits is stored and stays Pending, which is all an admission webhook
test needs. The ServiceAccount admission plugin is off (its controller, which makes the
`default` service account, is not running).

    with start_kube(binaries, workdir) as kube:
        kube.url                     # "https://127.0.0.1:PORT"
        kube.client()                # an httpx.Client with the API server's CA and an admin token
        kube.create(path, object)    # POST, returns the response

The API server allocates Service addresses from `--service-cluster-ip-range` (a range it needs
to start); nothing here routes or sends traffic to them. Processes die with the test process
(`setpriv --pdeathsig KILL`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.processes import free_port
from support.webpki import TestCA

START_TIMEOUT = 120.0
"""kube-apiserver's first start on an empty etcd takes several seconds (its bootstrap data)."""


class KubeError(RuntimeError):
    """etcd or the API server did not start; the message ends with its log's tail."""


@dataclass(frozen=True)
class KubeBinaries:
    kube_apiserver: str
    etcd: str

    @classmethod
    def from_folders(cls, folders: list[str]) -> KubeBinaries:
        found = {tool.name: str(tool) for folder in folders for tool in Path(folder).iterdir()}
        return cls(found["kube-apiserver"], found["etcd"])


class Kube:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.url = ""
        self.token = secrets.token_hex(16)
        self.ca: TestCA | None = None
        self._processes: list[subprocess.Popen[bytes]] = []

    def client(self, timeout: float = 30) -> httpx.Client:
        assert self.ca is not None
        return httpx.Client(
            base_url=self.url,
            verify=self.ca.context(),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
            trust_env=False,
        )

    def create(self, path: str, obj: dict[str, Any]) -> httpx.Response:
        with self.client() as client:
            return client.post(path, json=obj)

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> Kube:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self, name: str, command: list[str], ready: Callable[[], bool]) -> None:
        log = self.out / f"{name}.log"
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        # no proxy: the API server calls the webhook on 127.0.0.1
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with open(log, "ab") as sink:
            process = subprocess.Popen(command, cwd=self.out, stdout=sink, stderr=subprocess.STDOUT, env=env)
        self._processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.2)
        raise KubeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def start_kube(binaries: KubeBinaries, workdir: Path) -> Kube:
    workdir.mkdir(parents=True, exist_ok=True)
    kube = Kube(workdir)
    try:
        _start_all(kube, binaries)
    except BaseException:
        kube.stop()
        raise
    return kube


def _start_all(kube: Kube, binaries: KubeBinaries) -> None:
    out = kube.out
    client_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    kube._start(
        "etcd",
        [
            binaries.etcd,
            "--name=test",
            f"--data-dir={out / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--log-level=warn",
        ],
        lambda: httpx.get(f"{etcd_url}/health", timeout=2, trust_env=False).json().get("health") == "true",
    )

    kube.ca = TestCA.create(out / "ca", "kube test CA")
    cert, key = kube.ca.server(out / "tls", ["127.0.0.1", "localhost", "kubernetes.default.svc"])
    service_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (out / "sa.key").write_bytes(
        service_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (out / "sa.pub").write_bytes(
        service_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # A static token for an administrator (system:masters passes every RBAC check).
    (out / "tokens.csv").write_text(f'{kube.token},admin,admin,"system:masters"\n')
    port = free_port()
    kube.url = f"https://127.0.0.1:{port}"

    def ready() -> bool:
        with kube.client(timeout=3) as client:
            return client.get("/readyz").status_code == 200

    kube._start(
        "kube-apiserver",
        [
            binaries.kube_apiserver,
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            f"--cert-dir={out / 'certs'}",
            f"--token-auth-file={out / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={out / 'sa.pub'}",
            f"--service-account-signing-key-file={out / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
        ],
        ready,
    )


__all__ = ["Kube", "KubeBinaries", "KubeError", "start_kube"]
