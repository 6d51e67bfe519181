"""One AdmissionReview, start to finish: request bytes in, response and decision records out.

The server (`trust.webhook.server`) and `trust webhook review FILE` both call `handle`, so a
review tested offline in CI is answered exactly as the cluster's webhook answers it.

The rules, in order:

1. Not a create or update of a kind that runs containers (a Service, a DELETE, a CONNECT): allow,
   nothing to check.
2. The namespace is exempt (policy `kubernetes.exempt-namespaces` or `--exempt-namespace`): allow.
3. Every image of the object is decided (concurrently, within the deadline). One image refused
   refuses the whole object; the message names each refused image, the rule (file:line) and why.
   An image allowed only in audit mode adds a warning and an audit annotation.
4. On `/mutate`, each tag is resolved and the digest admitted; the response carries a JSONPatch
   that pins it (`repo:tag@sha256:…`), so the kubelet pulls what was verified.

A dry run is decided exactly like a real request (the webhook has no side effects to skip): a
dry run that always allowed would tell a user their unsigned Pod would be admitted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pull.records import dataclass, field
from trust.webhook.decisions import Decider, Verdict
from trust.webhook.review import AdmissionRequest, ContainerImage, answer, images_of, parse_review, pin_patch

PIN_HINT = "pin it by digest (image: repo@sha256:…) or send Pods through the webhook's /mutate path"


@dataclass
class Handled:
    response: dict[str, Any]
    verdict: str
    """allow, allow-audit, deny or skip (nothing to check)."""
    request: AdmissionRequest
    records: list[dict[str, Any]] = field(default_factory=list)
    """One decision record per image (the JSON log lines)."""


def handle(body: bytes, decider: Decider, *, mutate: bool, pool: ThreadPoolExecutor | None = None) -> Handled:
    """Answer one review. Raises `BadReview` for a request that is not a valid AdmissionReview."""
    request = parse_review(body)
    if not request.reviewed:
        return Handled(answer(request.uid, True), "skip", request)
    if decider.exempt_namespace(request.namespace):
        return Handled(
            answer(request.uid, True, message=f"namespace {request.namespace} is exempt"), "skip", request
        )
    images = images_of(request)
    if not images:
        return Handled(answer(request.uid, True), "skip", request)
    verdicts = _decide_all(images, decider, mutate, pool)
    records = [
        _record(request, image, verdict, mutate) for image, verdict in zip(images, verdicts, strict=True)
    ]
    refused = [verdict for verdict in verdicts if not verdict.allowed]
    if refused:
        message = "; ".join(_explain(verdict, mutate) for verdict in refused)
        return Handled(answer(request.uid, False, message=message[:4000]), "deny", request, records)
    audited = [verdict for verdict in verdicts if verdict.outcome == "allow-audit"]
    warnings = [f"trust (audit): {verdict.message}" for verdict in audited]
    annotations = {
        f"trust.dev/audit-{position}": verdict.message[:1000] for position, verdict in enumerate(audited)
    }
    pins = [
        (image, verdict.pinned) for image, verdict in zip(images, verdicts, strict=True) if verdict.pinned
    ]
    patch = pin_patch([(image, pinned) for image, pinned in pins if pinned]) if mutate else None
    return Handled(
        answer(request.uid, True, warnings=warnings, audit_annotations=annotations, patch=patch),
        "allow-audit" if audited else "allow",
        request,
        records,
    )


def _decide_all(
    images: list[ContainerImage], decider: Decider, mutate: bool, pool: ThreadPoolExecutor | None
) -> list[Verdict]:
    if len(images) == 1 or pool is None:
        return [decider.decide(image.image, pin_tags=mutate) for image in images]
    futures = [pool.submit(decider.decide, image.image, pin_tags=mutate) for image in images]
    return [future.result() for future in futures]


def _explain(verdict: Verdict, mutate: bool) -> str:
    if "tag-only reference" in verdict.message and not mutate:
        return f"{verdict.message}; {PIN_HINT}"
    return verdict.message


def _record(
    request: AdmissionRequest, image: ContainerImage, verdict: Verdict, mutate: bool
) -> dict[str, Any]:
    """The decision log line: the decision-log fields of `trust verify`, plus where it came from."""
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "uid": request.uid,
        "namespace": request.namespace,
        "kind": request.kind,
        "name": request.name or None,
        "operation": request.operation,
        "dryRun": request.dry_run,
        "path": "/mutate" if mutate else "/validate",
        "container": image.container,
        "image": image.image,
        "pinned": verdict.pinned,
        "decision": verdict.outcome,
        "message": verdict.message,
        "cached": verdict.cached,
    }
    if verdict.evaluation is not None:
        record.update({key: value for key, value in verdict.evaluation.items() if key not in ("decision",)})
    return record
