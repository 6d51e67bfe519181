"""The Kubernetes admission webhook: the policy of `trust verify --policy`, enforced by the API server.

A second front end beside the command line (docs/architecture.md, layer 5). The face: `handle`
(one AdmissionReview, as the server and `trust webhook review` answer it), `Decider` (verdicts
with caching, single flight and deadlines), `ServerSettings` and `serve` (the HTTPS server,
imported lazily: uvicorn loads only when a server starts). See docs/kubernetes.md.
"""

from __future__ import annotations

from trust.webhook.decisions import Decider, DeciderSettings, Verdict
from trust.webhook.handler import Handled, handle
from trust.webhook.review import BadReview

__all__ = ["BadReview", "Decider", "DeciderSettings", "Handled", "Verdict", "handle"]
