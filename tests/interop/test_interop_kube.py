"""The admission webhook registered with a real Kubernetes API server (issue 13's last mile).

kube-apiserver and etcd (built by scripts/peers.sh, `support.kube`) run on 127.0.0.1; `trust
webhook serve` runs beside them with a policy that wants the release key's signature. The API
server is told about the webhook the way a cluster is, with a `MutatingWebhookConfiguration`
(`/mutate`: pin tags to the digest admitted) and a `ValidatingWebhookConfiguration`
(`/validate`), and Pods and Deployments are created through its REST API: what reaches the
webhook is the API server's own AdmissionReview, and what the API server does with the answer
(refuse with the webhook's message, apply the JSONPatch) is checked on the stored object.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import OCI11Registry, Peers
from interop_support import TRUST, run
from support.images import push_image, simple_image
from support.kube import Kube, start_kube
from support.webpki import TestCA

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1"


@dataclass(frozen=True)
class Cluster:
    kube: Kube
    signed: str
    unsigned: str
    tagged: str
    log: Path

    def decisions(self, name: str) -> list[dict[str, Any]]:
        """The webhook's decision log lines about the object called `name`."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("name") == name]


def pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod(name, image)["spec"]},
        },
    }


def webhook_configuration(kind: str, path: str, url: str, ca: TestCA) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": f"{path}.trust.test",
        "clientConfig": {
            "url": f"{url}/{path}",
            "caBundle": base64.b64encode(ca.cert_path.read_bytes()).decode(),
        },
        "rules": [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            },
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "resources": ["deployments"],
            },
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 15,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": f"trust-{path}"},
        "webhooks": [hook],
    }


@pytest.fixture(scope="module")
def cluster(
    peers: Peers, oci11_registry: OCI11Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("kube")
    env = {
        "HOME": str(folder),
        "TRUST_STORE": str(folder / "store"),
        "COSIGN_PASSWORD": "k",
        "TRUST_PASSWORD": "k",
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COSIGN_")}, **env}
    run([peers.cosign, "generate-key-pair", "--output-key-prefix", str(folder / "release")], env)
    host = oci11_registry.host
    signed = push_image(host, "kube/app", simple_image(b"admitted by the webhook"), tag="v1")
    unsigned = push_image(host, "kube/app", simple_image(b"refused by the webhook"), tag="unsigned")
    signed_ref = f"{host}/kube/app@{signed.digest}"
    run([TRUST, "sign", "--tlog-upload=false", "--key", str(folder / "release.key"), signed_ref], env)
    policy = folder / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"authorities:\n  release:\n    cosign-keys: [{folder / 'release.pub'}]\n"
        f"rules:\n  - scope: {host}/kube/*\n    signed-by: [release]\n"
        "kubernetes:\n  exempt-namespaces: [kube-system]\n"
        "default:\n  reject: true\n"
    )
    ca = TestCA.create(folder / "webhook-ca")
    cert, key = ca.server(folder / "webhook-tls", ["127.0.0.1"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "webhook.log").open("wb")
    webhook = subprocess.Popen(
        [
            *[sys.executable, "-m", "trust", "webhook", "serve", "--policy", str(policy)],
            *["--tls-cert", str(cert), "--tls-key", str(key), "--listen", f"127.0.0.1:{port}"],
            *["--workers", "1", "--deadline", "10", "--insecure-registry", host],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", verify=ca.context(), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert webhook.poll() is None and time.monotonic() < deadline, "the webhook did not start"
            time.sleep(0.1)
        with start_kube(peers.kube, folder / "cluster") as kube:
            for kind, path in (
                ("MutatingWebhookConfiguration", "mutate"),
                ("ValidatingWebhookConfiguration", "validate"),
            ):
                resource = f"{WEBHOOKS}/{kind.lower()}s"
                created = kube.create(resource, webhook_configuration(kind, path, url, ca))
                assert created.status_code == 201, created.text
            # The API server picks new configurations up from its own watch: wait until an
            # unsigned Pod is refused (a dry run, so nothing is stored meanwhile).
            deadline = time.monotonic() + 60
            while (
                kube.create(
                    f"{PODS}?dryRun=All", pod("probe", f"{host}/kube/app@{unsigned.digest}")
                ).status_code
                < 400
            ):
                assert time.monotonic() < deadline, "the API server never called the webhook"
                time.sleep(0.5)
            yield Cluster(
                kube,
                signed_ref,
                f"{host}/kube/app@{unsigned.digest}",
                f"{host}/kube/app:v1",
                folder / "webhook.log",
            )
    finally:
        webhook.terminate()
        try:
            webhook.wait(timeout=10)
        except subprocess.TimeoutExpired:
            webhook.kill()
        log.close()


def test_a_signed_pod_is_admitted_and_stored(cluster: Cluster) -> None:
    created = cluster.kube.create(PODS, pod("signed", cluster.signed))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["containers"][0]["image"] == cluster.signed
    with cluster.kube.client() as client:
        assert client.get(f"{PODS}/signed").status_code == 200
    # the API server called both webhooks, mutating first, with its own AdmissionReview
    paths = [line["path"] for line in cluster.decisions("signed")]
    assert paths == ["/mutate", "/validate"]
    assert {line["decision"] for line in cluster.decisions("signed")} == {"allow"}


def test_an_unsigned_pod_is_refused_with_the_webhooks_reason(cluster: Cluster) -> None:
    refused = cluster.kube.create(PODS, pod("unsigned", cluster.unsigned))
    assert refused.status_code in (400, 403), refused.text
    message = refused.json()["message"]
    assert 'admission webhook "mutate.trust.test" denied the request' in message
    assert cluster.unsigned in message and "no signatures found" in message
    with cluster.kube.client() as client:
        assert client.get(f"{PODS}/unsigned").status_code == 404  # nothing stored


def test_a_tag_is_pinned_to_the_admitted_digest_by_the_mutating_webhook(cluster: Cluster) -> None:
    created = cluster.kube.create(PODS, pod("tagged", cluster.tagged))
    assert created.status_code == 201, created.text
    stored = created.json()["spec"]["containers"][0]["image"]
    assert stored == cluster.tagged.replace(":v1", "") + "@" + cluster.signed.split("@")[
        1
    ] or stored.endswith(cluster.signed.split("@")[1])


def test_a_deployment_of_an_unsigned_image_is_refused(cluster: Cluster) -> None:
    refused = cluster.kube.create(DEPLOYMENTS, deployment("web", cluster.unsigned))
    assert refused.status_code in (400, 403), refused.text
    created = cluster.kube.create(DEPLOYMENTS, deployment("web", cluster.signed))
    assert created.status_code == 201, created.text


def test_an_exempt_namespace_admits_an_unsigned_pod(cluster: Cluster) -> None:
    created = cluster.kube.create("/api/v1/namespaces/kube-system/pods", pod("infra", cluster.unsigned))
    assert created.status_code == 201, created.text


def test_a_bad_image_reference_is_refused_not_a_crash(cluster: Cluster) -> None:
    # the API server validates the Pod first; a well-formed reference to a missing repository
    # reaches the webhook, which cannot verify it and refuses
    missing = cluster.signed.replace("kube/app", "kube/missing")
    refused = cluster.kube.create(PODS, pod("missing", missing))
    assert refused.status_code in (400, 403), refused.text
    assert "denied the request" in refused.json()["message"]
