"""Prometheus metrics of the webhook (`GET /metrics`, text format), on a registry of its own.

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). Label values are
bounded: `path` and `verdict` are fixed sets, `kind` is one of the kinds the webhook reviews (or
"other"), `namespace` comes from the API server, which only sends names of namespaces that exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trust.webhook.review import POD_SPEC_PATHS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WebhookMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "trust_webhook_requests",
            "AdmissionReview requests answered, by path, verdict, kind and namespace.",
            ["path", "verdict", "kind", "namespace"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "trust_webhook_image_decisions",
            "Per-image verdicts (allow, allow-audit, deny, exempt, could-not-check, ...).",
            ["verdict"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trust_webhook_request_seconds",
            "Time from request received to response sent.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "trust_webhook_cache",
            "Decision cache lookups: hit, miss, or shared (joined a verification under way).",
            ["result"],
            registry=self.registry,
        )
        self.registry_errors = Counter(
            "trust_webhook_registry_errors",
            "Verifications that could not reach a registry in time or were refused by it.",
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "trust_webhook_bad_requests",
            "Requests refused as malformed or too large.",
            registry=self.registry,
        )

    def observe_cache(self, what: str) -> None:
        if what in ("hit", "miss", "shared"):
            self.cache.labels(what).inc()
        elif what == "registry-error":
            self.registry_errors.inc()

    def request(self, path: str, verdict: str, kind: str, namespace: str, seconds: float) -> None:
        kind_label = kind if kind in POD_SPEC_PATHS else "other"
        self.requests.labels(path, verdict, kind_label, namespace or "-").inc()
        self.latency.labels(path).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
