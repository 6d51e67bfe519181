"""`trust policy test SUITE.yaml`: a policy's expected decisions, checked without a cluster.

A suite lists cases; each names an image (a registry reference or an `oci:` layout) or a
Kubernetes object (a file written by `kubectl … -o yaml`, or inline), the decision expected, and
optionally a substring of the reason:

    policy: policy.yaml                     # relative to the suite; --policy overrides it
    cases:
      - name: release image is allowed
        image: registry.example.com/app@sha256:…
        expect: allow                       # allow | deny | audit
      - name: unsigned sidecar denies the pod
        object: manifests/pod.yaml
        namespace: shop                     # default: default
        expect: deny
        reason: "no signatures found"

Image cases are decided as `trust verify --policy` decides (manifests and signatures; no layers
are fetched); object cases go through the webhook's own `handle`, as `/validate` answers them.
Results render as text, JUnit XML (CI test reports) or SARIF.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from policy.errors import PolicyError
from pull.errors import TrustError, UsageError
from pull.records import dataclass

EXPECTATIONS = ("allow", "deny", "audit")
MAX_SUITE_BYTES = 1024 * 1024
MAX_CASES = 1000


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    image: str | None = None
    object: dict[str, Any] | None = None
    namespace: str = "default"
    reason: str | None = None


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decision: str
    """allow, deny, audit or error."""
    message: str

    @property
    def passed(self) -> bool:
        reason_ok = self.case.reason is None or self.case.reason in self.message
        return self.decision == self.case.expect and reason_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "expected": self.case.expect,
            "decision": self.decision,
            "passed": self.passed,
            "message": self.message,
        }


def load_suite(path: Path) -> tuple[Path | None, list[Case]]:
    """(policy named by the suite, cases). Raises `UsageError` naming the case at fault."""
    import yaml

    try:
        if not path.is_file():
            raise UsageError(f"suite {path} is not a regular file")
        text = path.read_bytes()[: MAX_SUITE_BYTES + 1]
    except OSError as err:
        raise UsageError(f"cannot read suite {path}: {err.strerror}") from None
    if len(text) > MAX_SUITE_BYTES:
        raise UsageError(f"suite {path} is larger than 1 MiB")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"suite {path} is not YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("cases"), list):
        raise UsageError(f"suite {path} must be a mapping with a 'cases' list")
    unknown = set(document) - {"policy", "cases"}
    if unknown:
        raise UsageError(f"suite {path}: unknown field {sorted(unknown)[0]!r} (expected policy, cases)")
    policy = document.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise UsageError(f"suite {path}: 'policy' must be a file name")
    cases = document["cases"]
    if len(cases) > MAX_CASES:
        raise UsageError(f"suite {path} has more than {MAX_CASES} cases")
    return (path.parent / policy if policy else None), [
        _case(item, number, path.parent) for number, item in enumerate(cases, start=1)
    ]


def _case(item: Any, number: int, base: Path) -> Case:
    import yaml

    where = f"case {number}"
    if not isinstance(item, dict):
        raise UsageError(f"{where} must be a mapping")
    unknown = set(item) - {"name", "image", "object", "namespace", "expect", "reason"}
    if unknown:
        raise UsageError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    name = item.get("name", where)
    expect = item.get("expect")
    if expect not in EXPECTATIONS:
        raise UsageError(f"{where} ({name}): 'expect' must be one of {', '.join(EXPECTATIONS)}")
    image, obj = item.get("image"), item.get("object")
    if (image is None) == (obj is None):
        raise UsageError(f"{where} ({name}): give exactly one of 'image' or 'object'")
    if image is not None and not isinstance(image, str):
        raise UsageError(f"{where} ({name}): 'image' must be a reference")
    if isinstance(obj, str):
        file = base / obj
        try:
            if not file.is_file():
                raise UsageError(f"{where} ({name}): {file} is not a regular file")
            obj = yaml.safe_load(file.read_bytes()[:MAX_SUITE_BYTES])
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"{where} ({name}): cannot read object {file}: {err}") from None
    if obj is not None and not isinstance(obj, dict):
        raise UsageError(f"{where} ({name}): 'object' must be a Kubernetes object (a mapping)")
    reason, namespace = item.get("reason"), item.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str) or not isinstance(reason, str | None):
        raise UsageError(f"{where}: 'name', 'namespace' and 'reason' must be strings")
    return Case(name=name, expect=expect, image=image, object=obj, namespace=namespace, reason=reason)


def run_suite(cases: list[Case], policy_path: Path, *, insecure: list[str] | None = None) -> list[CaseResult]:
    from trust.webhook.server import ServerSettings, decider_from

    decider = decider_from(
        ServerSettings(
            policy=str(policy_path), tls_cert="", tls_key="", insecure_registries=list(insecure or ())
        )
    )
    try:
        return [_run(case, decider) for case in cases]
    finally:
        decider.close()


def _run(case: Case, decider: Any) -> CaseResult:
    from trust.webhook.handler import handle

    if case.image is not None:
        verdict = decider.decide(case.image, pin_tags=False)
        return CaseResult(case, _decision(verdict.outcome), verdict.message)
    assert case.object is not None
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"kind": case.object.get("kind", "")},
            "namespace": case.namespace,
            "operation": "CREATE",
            "object": case.object,
        },
    }
    try:
        handled = handle(json.dumps(review).encode(), decider, mutate=False)
    except (TrustError, PolicyError) as err:
        return CaseResult(case, "error", str(err))
    response = handled.response["response"]
    message = response.get("status", {}).get("message", "") + " ".join(response.get("warnings", []))
    decision = {"allow": "allow", "allow-audit": "audit", "deny": "deny", "skip": "allow"}[handled.verdict]
    return CaseResult(case, decision, message)


def _decision(outcome: str) -> str:
    return {"allow": "allow", "exempt": "allow", "allow-audit": "audit", "deny": "deny"}.get(outcome, "error")


def junit_xml(results: list[CaseResult], suite_name: str) -> str:
    from xml.etree import ElementTree as ET

    failures = sum(not result.passed for result in results)
    root = ET.Element("testsuites")
    suite = ET.SubElement(
        root, "testsuite", name=suite_name, tests=str(len(results)), failures=str(failures), errors="0"
    )
    for result in results:
        testcase = ET.SubElement(suite, "testcase", classname="trust.policy", name=result.case.name)
        if not result.passed:
            failure = ET.SubElement(
                testcase,
                "failure",
                message=f"expected {result.case.expect}, got {result.decision}",
                type="PolicyTestFailure",
            )
            failure.text = result.message
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def sarif(results: list[CaseResult], suite_path: Path) -> dict[str, Any]:
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "trust policy test", "rules": [{"id": "policy-test"}]}},
                "results": [
                    {
                        "ruleId": "policy-test",
                        "level": "error",
                        "message": {
                            "text": f"{result.case.name}: expected {result.case.expect}, got "
                            f"{result.decision}: {result.message}"
                        },
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": str(suite_path)}}}],
                    }
                    for result in results
                    if not result.passed
                ],
            }
        ],
    }
