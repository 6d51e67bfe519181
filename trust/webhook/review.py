"""AdmissionReview in and out: the objects Kubernetes sends, the images in them, the answer.

Pure functions, no I/O: `parse_review` turns request bytes (hostile: any client that reaches the
port can send them) into an `AdmissionRequest`, `images_of` lists every container image of a Pod
or pod template with the JSON pointer of its `image` field, and `answer` builds the
`admission.k8s.io/v1` response, with a JSONPatch when images were pinned.

Where the images are, by kind (`request.kind.kind`):

    Pod                                              spec
    Deployment, ReplicaSet, StatefulSet, DaemonSet,  spec.template.spec
    Job, ReplicationController
    PodTemplate                                      template.spec
    CronJob                                          spec.jobTemplate.spec.template.spec

and in each pod spec: `containers`, `initContainers`, `ephemeralContainers` (the latter also
through the `ephemeralcontainers` subresource, which sends the whole Pod).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pull.errors import UsageError
from pull.records import dataclass
from pull.strictjson import loads as strict_json

MAX_REVIEW_BYTES = 3 * 1024 * 1024
"""The API server's own request limit (3 MiB); anything larger did not come from it."""
MAX_IMAGES = 256
"""Containers per object examined: far above any real Pod, low enough to bound the work."""

API_VERSION = "admission.k8s.io/v1"
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
REVIEWED_OPERATIONS = ("CREATE", "UPDATE")


class BadReview(UsageError):
    """The request is not an AdmissionReview this webhook can answer (HTTP 400)."""


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    kind: str
    namespace: str
    operation: str
    dry_run: bool
    object: dict[str, Any] | None
    name: str = ""

    @property
    def reviewed(self) -> bool:
        """Whether this request can run images: a create or update of a kind that holds pods."""
        return (
            self.operation in REVIEWED_OPERATIONS and self.kind in POD_SPEC_PATHS and self.object is not None
        )


@dataclass(frozen=True)
class ContainerImage:
    pointer: str
    """JSON pointer of the `image` field, e.g. `/spec/template/spec/containers/0/image`."""
    container: str
    section: str
    """containers, initContainers or ephemeralContainers."""
    image: str


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an `admission.k8s.io/v1` AdmissionReview. Raises `BadReview`."""
    if len(body) > MAX_REVIEW_BYTES:
        raise BadReview(f"request of {len(body)} bytes is larger than the API server's 3 MiB limit")
    try:
        review = strict_json(body, "the AdmissionReview")
    except ValueError as exc:  # not UTF-8, duplicate keys, NaN, nested too deeply, not JSON
        raise BadReview(f"request body is not a JSON AdmissionReview: {str(exc)[:200]}") from None
    if not isinstance(review, dict):
        raise BadReview("request body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise BadReview(f"expected apiVersion {API_VERSION} and kind AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise BadReview("request.uid is missing or not a short string")
    kind = request.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, dict) else None
    operation = request.get("operation")
    if not isinstance(kind_name, str) or not isinstance(operation, str):
        raise BadReview("request.kind.kind and request.operation must be strings")
    namespace = request.get("namespace") or ""
    obj = request.get("object")
    if not isinstance(namespace, str) or (obj is not None and not isinstance(obj, dict)):
        raise BadReview("request.namespace must be a string and request.object an object")
    name = request.get("name") or ""
    return AdmissionRequest(
        uid=uid,
        kind=kind_name,
        namespace=namespace,
        operation=operation,
        dry_run=request.get("dryRun") is True,
        object=obj,
        name=name if isinstance(name, str) else "",
    )


def images_of(request: AdmissionRequest) -> list[ContainerImage]:
    """Every container image of the object, init containers first. Raises `BadReview` when the
    object's shape is not what its kind promises (a list that is not a list, an image that is not
    a string): a malformed object is refused, never half-read."""
    if not request.reviewed:
        return []
    assert request.object is not None
    path = POD_SPEC_PATHS[request.kind]
    spec: Any = request.object
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
        if spec is None:
            return []  # e.g. a Deployment without a template: the API server rejects it anyway
    if not isinstance(spec, dict):
        raise BadReview(f"{'.'.join(path)} of the {request.kind} is not an object")
    found = []
    for section in CONTAINER_LISTS:
        containers = spec.get(section)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise BadReview(f"{'.'.join(path)}.{section} is not a list")
        for position, container in enumerate(containers):
            if not isinstance(container, dict) or not isinstance(container.get("image"), str):
                raise BadReview(f"{'.'.join(path)}.{section}[{position}] has no image string")
            name = container.get("name")
            pointer = "/" + "/".join((*path, section, str(position), "image"))
            found.append(
                ContainerImage(pointer, name if isinstance(name, str) else "", section, container["image"])
            )
            if len(found) > MAX_IMAGES:
                raise BadReview(f"the {request.kind} has more than {MAX_IMAGES} containers")
    return found


def answer(
    uid: str,
    allowed: bool,
    *,
    message: str = "",
    warnings: list[str] | None = None,
    audit_annotations: dict[str, str] | None = None,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview response. A denial carries HTTP 403 and `message` in `status`."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    elif message:
        response["status"] = {"code": 200, "message": message}
    if warnings:
        # The API server shows each warning to the client; it refuses long ones (>120 chars kept).
        response["warnings"] = [warning[:500] for warning in warnings[:20]]
    if audit_annotations:
        response["auditAnnotations"] = audit_annotations
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def pin_patch(pins: list[tuple[ContainerImage, str]]) -> list[dict[str, Any]]:
    """JSONPatch operations replacing each image with its pinned form (`repo:tag@sha256:…`)."""
    return [{"op": "replace", "path": image.pointer, "value": pinned} for image, pinned in pins]
