"""The Kubernetes admission webhook (trust/webhook/): real AdmissionReview JSON over real TLS.

Objects come from kubectl (`--dry-run=client -o json`) where it can make them without a cluster,
are wrapped as the API server wraps them, and are POSTed to `trust webhook serve` started on
127.0.0.1 against the test registry. The requests are the documented `admission.k8s.io/v1`
shape the API server sends; tests/interop/test_interop_kube.py registers the webhook with a real
kube-apiserver and lets it send them.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.images import push_image, simple_image
from support.registry import Registry
from support.webpki import TestCA

from pull.clients import RegistryClients
from pull.reference import Reference
from trust.cli.app import main
from trust.cosign.signing import sign_image
from trust.keys import KeySigner
from trust.keys.keyfiles import generate_keypair, load_private_key
from trust.webhook.review import BadReview, images_of, parse_review

KUBECTL = shutil.which("kubectl")


def kubectl_object(*args: str) -> dict[str, Any]:
    """An object as kubectl builds it, without a cluster."""
    assert KUBECTL, "kubectl is installed by scripts/setup.sh"
    out = subprocess.run(
        [KUBECTL, "create", *args, "--dry-run=client", "-o", "json"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def pod_of(deployment: dict[str, Any], name: str = "pod") -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet would create (what reaches the webhook for kind Pod)."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template["metadata"]},
        "spec": template["spec"],
    }


def review(
    obj: dict[str, Any] | None,
    *,
    kind: str | None = None,
    namespace: str = "default",
    operation: str = "CREATE",
    dry_run: bool = False,
    sub_resource: str | None = None,
) -> dict[str, Any]:
    """Wrap `obj` as the API server does."""
    kind = kind or (obj or {}).get("kind", "Pod")
    group_version = (obj or {}).get("apiVersion", "v1")
    group, _, version = group_version.rpartition("/")
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if obj is not None:
        request["name"] = obj.get("metadata", {}).get("name", "")
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Images:
    signed: str
    unsigned: str
    tagged: str
    """A signed image, named by tag."""
    policy: Path
    registry: Registry


@pytest.fixture(scope="module")
def images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Images:
    folder = tmp_path_factory.mktemp("webhook")
    private_pem, public_pem = generate_keypair(b"")
    (folder / "release.pub").write_bytes(public_pem)
    signer = KeySigner(load_private_key(private_pem, b""))
    signed = push_image(registry, "wh/app", simple_image(b"webhook signed"), tag="v1")
    unsigned = push_image(registry, "wh/app", simple_image(b"webhook unsigned"), tag="unsigned")
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(f"{registry.host}/wh/app@{signed.digest}"), signer)
    policy = folder / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "authorities:\n"
        f"  release:\n    cosign-keys: [{folder / 'release.pub'}]\n"
        "rules:\n"
        f"  - scope: {registry.host}/wh/*\n"
        "    signed-by: [release]\n"
        f"  - scope: {registry.host}/audited/*\n"
        "    signed-by: [release]\n"
        "    mode: audit\n"
        "kubernetes:\n"
        "  exempt-namespaces: [kube-system]\n"
        f"  exempt-images: [{registry.host}/infra/*]\n"
        "default:\n  reject: true\n"
    )
    return Images(
        signed=f"{registry.host}/wh/app@{signed.digest}",
        unsigned=f"{registry.host}/wh/app@{unsigned.digest}",
        tagged=f"{registry.host}/wh/app:v1",
        policy=policy,
        registry=registry,
    )


@dataclass
class Webhook:
    url: str
    ca: TestCA
    process: subprocess.Popen[bytes]
    cert: Path
    key: Path
    log: Path

    def post(self, path: str, body: dict[str, Any] | bytes, timeout: float = 20) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        with httpx.Client(verify=self.ca.context(), timeout=timeout) as client:
            return client.post(self.url + path, content=content, headers={"content-type": "application/json"})

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(path, body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        assert answer["uid"] == body["request"]["uid"]
        return answer


def start_webhook(directory: Path, policy: Path, *extra: str) -> Webhook:
    ca = TestCA.create(directory / "ca")
    cert, key = ca.server(directory / "tls", ["127.0.0.1", "trust-webhook.trust-system.svc"])
    port = free_port()
    log = directory / "webhook.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trust",
            "webhook",
            "serve",
            "--policy",
            str(policy),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", verify=ca.context(), timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"webhook did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return Webhook(url, ca, process, cert, key, log)


@pytest.fixture(scope="module")
def webhook(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    running = start_webhook(tmp_path_factory.mktemp("webhook-server"), images.policy, "--deadline", "5")
    yield running
    running.process.terminate()
    try:
        running.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()


# -- allow and deny --------------------------------------------------------------------------------


def test_a_signed_deployment_pinned_by_digest_is_allowed(webhook: Webhook, images: Images) -> None:
    deployment = kubectl_object("deployment", "web", f"--image={images.signed}")
    answer = webhook.answer("/validate", review(deployment))
    assert answer["allowed"] is True
    assert "patch" not in answer
    assert answer["uid"]


def test_an_unsigned_pod_is_denied_naming_the_image_and_the_rule(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.unsigned}"))
    answer = webhook.answer("/validate", review(pod))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert answer["status"]["code"] == 403
    assert images.unsigned in message
    assert f"{images.policy}:" in message and "rule 1" in message
    assert "no signatures found" in message


def test_one_unsigned_init_container_denies_the_whole_pod(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.signed}"))
    pod["spec"]["initContainers"] = [{"name": "setup", "image": images.unsigned}]
    answer = webhook.answer("/validate", review(pod))
    assert answer["allowed"] is False
    assert images.unsigned in answer["status"]["message"]
    assert images.signed not in answer["status"]["message"]


@pytest.mark.parametrize(
    "make",
    [
        lambda image: kubectl_object("cronjob", "cj", f"--image={image}", "--schedule=*/5 * * * *"),
        lambda image: kubectl_object("job", "j", f"--image={image}"),
        lambda image: {
            **kubectl_object("deployment", "d", f"--image={image}"),
            "kind": "StatefulSet",
        },
    ],
    ids=["cronjob", "job", "statefulset"],
)
def test_pod_templates_of_every_workload_kind_are_checked(
    webhook: Webhook, images: Images, make: Any
) -> None:
    assert webhook.answer("/validate", review(make(images.signed)))["allowed"] is True
    assert webhook.answer("/validate", review(make(images.unsigned)))["allowed"] is False


def test_an_ephemeral_container_added_to_a_pod_is_checked(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.signed}"))
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": images.unsigned}]
    answer = webhook.answer("/validate", review(pod, operation="UPDATE", sub_resource="ephemeralcontainers"))
    assert answer["allowed"] is False
    assert images.unsigned in answer["status"]["message"]


def test_a_tag_is_denied_on_validate_and_pinned_by_mutate(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.tagged}"))
    denied = webhook.answer("/validate", review(pod))
    assert denied["allowed"] is False
    assert "tag-only" in denied["status"]["message"] and "/mutate" in denied["status"]["message"]

    mutated = webhook.answer("/mutate", review(pod))
    assert mutated["allowed"] is True and mutated["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(mutated["patch"]))
    digest = images.signed.rpartition("@")[2]
    assert patch == [
        {"op": "replace", "path": "/spec/containers/0/image", "value": f"{images.tagged}@{digest}"}
    ]
    pod["spec"]["containers"][0]["image"] = patch[0]["value"]
    assert webhook.answer("/validate", review(pod))["allowed"] is True


def test_mutate_refuses_a_tag_whose_digest_is_unsigned(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.registry.host}/wh/app:unsigned"))
    answer = webhook.answer("/mutate", review(pod))
    assert answer["allowed"] is False and "patch" not in answer


def test_audit_mode_allows_with_warnings_and_audit_annotations(
    webhook: Webhook, images: Images, registry: Registry
) -> None:
    pushed = push_image(registry, "audited/app", simple_image(b"audited"), tag="v1")
    pod = pod_of(kubectl_object("deployment", "web", f"--image={registry.host}/audited/app@{pushed.digest}"))
    answer = webhook.answer("/validate", review(pod))
    assert answer["allowed"] is True
    assert any("audit" in warning for warning in answer["warnings"])
    assert list(answer["auditAnnotations"]) == ["trust.dev/audit-0"]


# -- nothing to check -----------------------------------------------------------------------------


def test_other_kinds_deletes_and_exempt_namespaces_are_allowed(webhook: Webhook, images: Images) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    assert webhook.answer("/validate", review(service))["allowed"] is True
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.unsigned}"))
    assert webhook.answer("/validate", review(None, kind="Pod", operation="DELETE"))["allowed"] is True
    assert webhook.answer("/validate", review(pod, namespace="kube-system"))["allowed"] is True
    infra = pod_of(kubectl_object("deployment", "web", f"--image={images.registry.host}/infra/cni:v1"))
    assert webhook.answer("/validate", review(infra))["allowed"] is True


def test_a_dry_run_is_decided_like_the_real_request(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.unsigned}"))
    assert webhook.answer("/validate", review(pod, dry_run=True))["allowed"] is False


# -- hostile and broken requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
        b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}',
        b"[" * 100_000,
        json.dumps(review({"kind": "Pod", "spec": {"containers": "oops"}})).encode(),
        json.dumps(review({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": 7}]}})).encode(),
    ],
    ids=["not-json", "no-request", "v1beta1", "deep", "containers-not-a-list", "image-not-a-string"],
)
def test_a_malformed_review_is_a_400_and_the_server_keeps_serving(webhook: Webhook, body: bytes) -> None:
    response = webhook.post("/validate", body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert httpx.get(webhook.url + "/healthz", verify=webhook.ca.context()).status_code == 200


def test_a_request_over_the_api_servers_3_mib_limit_is_refused(webhook: Webhook) -> None:
    response = webhook.post("/validate", b"{" + b" " * (3 * 1024 * 1024 + 10) + b"}")
    assert response.status_code == 413
    assert "3 MiB" in response.json()["error"]


def test_a_registry_that_hangs_gives_a_denial_within_the_deadline(tmp_path: Path, images: Images) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never answers
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(images.policy.read_text().replace(f"{images.registry.host}/wh/*", f"{host}/wh/*"))
    hook = start_webhook(tmp_path, policy, "--deadline", "1.5")
    try:
        pod = pod_of(kubectl_object("deployment", "web", f"--image={host}/wh/app@sha256:{'a' * 64}"))
        started = time.monotonic()
        answer = hook.answer("/validate", review(pod))
        took = time.monotonic() - started
        assert answer["allowed"] is False
        assert "could not check" in answer["status"]["message"] and "deadline" in answer["status"]["message"]
        assert took < 5, took
        metrics = httpx.get(hook.url + "/metrics", verify=hook.ca.context()).text
        assert "trust_webhook_registry_errors_total 1.0" in metrics
    finally:
        hook.process.terminate()
        hook.process.wait(timeout=10)
        silent.close()


# -- operations ----------------------------------------------------------------------------------


def test_metrics_count_requests_decisions_and_cache_hits(webhook: Webhook, images: Images) -> None:
    deployment = kubectl_object("deployment", "web", f"--image={images.signed}")
    webhook.answer("/validate", review(deployment, namespace="metrics-ns"))
    webhook.answer("/validate", review(deployment, namespace="metrics-ns"))
    metrics = httpx.get(webhook.url + "/metrics", verify=webhook.ca.context()).text
    assert (
        'trust_webhook_requests_total{kind="Deployment",namespace="metrics-ns",'
        'path="/validate",verdict="allow"} 2.0' in metrics
    )
    assert 'trust_webhook_cache_total{result="hit"}' in metrics
    assert "trust_webhook_request_seconds_bucket" in metrics
    assert httpx.get(webhook.url + "/readyz", verify=webhook.ca.context()).status_code == 200


def test_each_decision_is_one_json_log_line(webhook: Webhook, images: Images) -> None:
    pod = pod_of(kubectl_object("deployment", "web", f"--image={images.unsigned}"), name="logged-pod")
    webhook.answer("/validate", review(pod, namespace="logged"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in webhook.log.read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("name") == "logged-pod"]
        if mine:
            break
        time.sleep(0.1)
    [record] = mine
    assert record["decision"] == "deny" and record["image"] == images.unsigned
    assert record["namespace"] == "logged" and record["ruleLine"] > 0 and record["authorities"]


def test_a_rotated_certificate_is_served_to_new_connections(tmp_path: Path, images: Images) -> None:
    hook = start_webhook(tmp_path, images.policy)
    try:
        new_ca = TestCA.create(tmp_path / "new-ca", "rotated CA")
        cert, key = new_ca.server(tmp_path / "new-tls", ["127.0.0.1"])
        time.sleep(1.1)  # the files are looked at no more than once a second
        hook.key.write_bytes(key.read_bytes())
        hook.cert.write_bytes(cert.read_bytes())
        deadline = time.monotonic() + 10
        while True:
            try:
                ok = httpx.get(hook.url + "/healthz", verify=new_ca.context(), timeout=2).status_code
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert ok == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(hook.url + "/healthz", verify=hook.ca.context(), timeout=2)
    finally:
        hook.process.terminate()
        hook.process.wait(timeout=10)


def test_concurrent_reviews_of_one_image_share_one_verification(webhook: Webhook, registry: Registry) -> None:
    pushed = push_image(registry, "wh/flight", simple_image(b"single flight"), tag="v1")  # unsigned
    image = f"{registry.host}/wh/flight@{pushed.digest}"
    deployment = kubectl_object("deployment", "web", f"--image={image}")
    before = _metric(webhook, 'trust_webhook_cache_total{result="miss"}')
    answers: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(webhook.answer("/validate", review(deployment))["allowed"])
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [False] * 8
    # the first request verifies; the other seven joined it or, once it was done, hit the cache
    assert _metric(webhook, 'trust_webhook_cache_total{result="miss"}') - before == 1


def _metric(webhook: Webhook, name: str) -> float:
    text = httpx.get(webhook.url + "/metrics", verify=webhook.ca.context()).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- offline: trust webhook review ---------------------------------------------------------------


def test_webhook_review_answers_a_file_without_a_server(
    tmp_path: Path, images: Images, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = tmp_path / "allowed.json"
    allowed.write_text(json.dumps(review(kubectl_object("deployment", "w", f"--image={images.signed}"))))
    assert main(["webhook", "review", str(allowed), "--policy", str(images.policy)]) == 0
    assert json.loads(capsys.readouterr().out)["response"]["allowed"] is True

    denied = tmp_path / "denied.json"
    denied.write_text(json.dumps(review(kubectl_object("deployment", "w", f"--image={images.unsigned}"))))
    assert main(["webhook", "review", str(denied), "--policy", str(images.policy)]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["response"]["allowed"] is False
    assert "trust: denied:" in captured.err

    tagged = tmp_path / "tagged.json"
    tagged.write_text(json.dumps(review(kubectl_object("deployment", "w", f"--image={images.tagged}"))))
    assert main(["webhook", "review", str(tagged), "--policy", str(images.policy), "--mutate"]) == 0
    assert json.loads(capsys.readouterr().out)["response"]["patchType"] == "JSONPatch"

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["webhook", "review", str(broken), "--policy", str(images.policy)]) == 2
    assert "not a JSON AdmissionReview" in capsys.readouterr().err


# -- the pure parts ------------------------------------------------------------------------------


def test_images_of_finds_every_container_list_with_its_json_pointer() -> None:
    cronjob = kubectl_object("cronjob", "cj", "--image=registry.example/a:1", "--schedule=* * * * *")
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    template["initContainers"] = [{"name": "init", "image": "registry.example/i:1"}]
    found = images_of(parse_review(json.dumps(review(cronjob)).encode()))
    assert [(image.pointer, image.image, image.section) for image in found] == [
        (
            "/spec/jobTemplate/spec/template/spec/initContainers/0/image",
            "registry.example/i:1",
            "initContainers",
        ),
        ("/spec/jobTemplate/spec/template/spec/containers/0/image", "registry.example/a:1", "containers"),
    ]


def test_a_review_with_too_many_containers_is_refused() -> None:
    pod = {"kind": "Pod", "spec": {"containers": [{"name": f"c{i}", "image": "a/b:1"} for i in range(300)]}}
    with pytest.raises(BadReview, match="more than 256 containers"):
        images_of(parse_review(json.dumps(review(pod)).encode()))


def test_the_kubernetes_section_of_a_policy_is_checked_at_load(tmp_path: Path, images: Images) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        images.policy.read_text().replace(
            "exempt-namespaces: [kube-system]", "exempt-namespaces: [Kube_System]"
        )
    )
    assert main(["policy", "check", str(bad)]) == 2


# -- trust policy test ---------------------------------------------------------------------------


def test_policy_test_runs_image_and_object_cases_and_reports_junit(
    tmp_path: Path, images: Images, capsys: pytest.CaptureFixture[str]
) -> None:
    import xml.etree.ElementTree as ET

    import yaml

    (tmp_path / "pod.yaml").write_text(
        yaml.safe_dump(pod_of(kubectl_object("deployment", "w", f"--image={images.unsigned}")))
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"policy: {images.policy}\n"
        "cases:\n"
        f"  - {{name: signed, image: '{images.signed}', expect: allow}}\n"
        f"  - {{name: unsigned, image: '{images.unsigned}', expect: deny, reason: no signatures found}}\n"
        "  - {name: pod, object: pod.yaml, expect: deny, reason: denied by rule 1}\n"
        "  - {name: exempt, object: pod.yaml, namespace: kube-system, expect: allow}\n"
    )
    assert main(["policy", "test", str(suite)]) == 0
    assert "4 passed, 0 failed" in capsys.readouterr().err

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        suite.read_text().replace("expect: allow}\n  - {name: unsigned", "expect: deny}\n  - {name: unsigned")
    )
    assert main(["policy", "test", str(wrong), "--output", "junit"]) == 3
    report = ET.fromstring(capsys.readouterr().out.split("?>", 1)[1])
    [failure] = report.iter("failure")
    assert failure.get("message") == "expected deny, got allow"
    assert report.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cases: [{name: x, expect: maybe, image: a/b:1}]", "'expect' must be one of"),
        ("cases: [{name: x, expect: allow}]", "exactly one of 'image' or 'object'"),
        ("cases: [{name: x, expect: allow, object: missing.yaml}]", "is not a regular file"),
        ("cases: {}", "a 'cases' list"),
    ],
)
def test_policy_test_refuses_a_malformed_suite(
    tmp_path: Path, images: Images, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    assert main(["policy", "test", str(suite), "--policy", str(images.policy)]) == 2
    assert problem in capsys.readouterr().err


# -- deploy/kubernetes ---------------------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def deploy_documents() -> list[dict[str, Any]]:
    import yaml

    documents = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict) and document.get("kind"), f"{path.name}: not an object"
            assert document.get("apiVersion") and document["metadata"].get("name"), path.name
            documents.append(document)
    return documents


def test_every_deploy_document_parses_as_a_kubernetes_object() -> None:
    kinds = sorted(document["kind"] for document in deploy_documents())
    assert kinds == sorted(
        [
            "Certificate",
            "ConfigMap",
            "Deployment",
            "Issuer",
            "MutatingWebhookConfiguration",
            "Namespace",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        ]
    )
    # kubectl cannot check them here: `create -f` needs an API server for its type discovery.


def test_the_webhook_configurations_match_the_service_and_the_deployment() -> None:
    documents = {
        (document["kind"], document["metadata"]["name"]): document for document in deploy_documents()
    }
    service = documents[("Service", "trust-webhook")]
    deployment = documents[("Deployment", "trust-webhook")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    listen = next(arg for arg in container["args"] if arg.startswith("--listen="))
    assert listen.endswith(f":{container['ports'][0]['containerPort']}")
    deadline = float(next(arg for arg in container["args"] if arg.startswith("--deadline=")).split("=")[1])
    for kind, path in [
        ("MutatingWebhookConfiguration", "/mutate"),
        ("ValidatingWebhookConfiguration", "/validate"),
    ]:
        [hook] = next(d for (k, _), d in documents.items() if k == kind)["webhooks"]
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"] and hook["matchPolicy"] == "Equivalent"
        assert hook["timeoutSeconds"] > deadline
        target = hook["clientConfig"]["service"]
        assert (target["name"], target["namespace"], target["path"], target["port"]) == (
            service["metadata"]["name"],
            service["metadata"]["namespace"],
            path,
            port["port"],
        )
        skipped = hook["namespaceSelector"]["matchExpressions"][0]
        assert skipped["operator"] == "NotIn" and {"kube-system", "trust-system"} <= set(skipped["values"])
        resources = {resource for rule in hook["rules"] for resource in rule["resources"]}
        assert {"pods", "deployments", "cronjobs", "pods/ephemeralcontainers"} <= resources


def test_the_policy_configmap_is_a_valid_policy(tmp_path: Path) -> None:
    [configmap] = [d for d in deploy_documents() if d["kind"] == "ConfigMap"]
    key = tmp_path / "release.pub"
    key.write_bytes(generate_keypair(b"")[1])
    text = configmap["data"]["policy.yaml"].replace("/etc/trust/keys/release.pub", str(key))
    (tmp_path / "policy.yaml").write_text(text)
    assert main(["policy", "check", str(tmp_path / "policy.yaml")]) == 0
