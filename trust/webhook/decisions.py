"""One image, one verdict, fast: the webhook's cache, single flight, deadlines and exemptions.

`Decider.decide(image, ...)` answers for one container image. It is called from many threads at
once (the server runs each review's images concurrently) and keeps the API server's deadline:

- **Decisions are cached** by (policy fingerprint, image reference with digest, platform). The
  policy fingerprint is the digest of every input the loader read (the policy file, keys, trust
  stores, trusted roots: `Policy.inputs`, as `policy.reuse` fingerprints them), so a changed key or
  ConfigMap is a different key, never a stale hit. The files are re-read at most every
  `reload_seconds`; a change reloads the policy and empties the cache. An allow is kept for
  `decision_ttl`, a denial for `denial_ttl` (short: an image signed a minute later should run), a
  "could not check" never.
- **Tags** (only on `/mutate`) resolve to the digest the registry serves now; a resolution is kept
  for `tag_ttl`. The verdict is then about that digest, and the patch pins it.
- **Single flight**: concurrent requests for the same key share one verification.
- **Deadline**: a verdict that is not ready in time is "could not check" — a denial under an
  enforce rule, an allow with a warning under an audit rule. The verification goes on in the
  background and fills the cache for the next request (the API server retries).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from policy.admission import ClientFor
from policy.evaluate import Evaluation
from policy.model import Mode, Policy
from policy.scope import Scope
from pull.errors import CouldNotCheck, IntegrityError, TrustError, UsageError
from pull.manifest import Platform
from pull.records import dataclass, field
from pull.reference import Reference


@dataclass(frozen=True)
class Verdict:
    """The answer for one container image."""

    image: str
    """As written in the object."""
    outcome: str
    """allow, allow-audit, deny, exempt, could-not-check, integrity-failure, invalid."""
    message: str
    pinned: str | None = None
    """`/mutate`: the image with the digest it resolved to (None: already pinned or not resolved)."""
    evaluation: dict[str, Any] | None = None
    cached: bool = False

    @property
    def allowed(self) -> bool:
        return self.outcome in ("allow", "allow-audit", "exempt")


@dataclass
class DeciderSettings:
    decision_ttl: float = 300.0
    denial_ttl: float = 10.0
    tag_ttl: float = 30.0
    deadline: float = 8.0
    reload_seconds: float = 2.0
    platform: Platform | None = None
    exempt_namespaces: tuple[str, ...] = ()
    exempt_images: tuple[Scope, ...] = ()
    workers: int = 16


@dataclass
class _Entry:
    verdict: Verdict
    until: float


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0
    registry_errors: int = 0
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def count(self, what: str) -> None:
        if what == "hit":
            self.hits += 1
        elif what == "miss":
            self.misses += 1
        elif what == "shared":
            self.shared += 1
        elif what == "registry-error":
            self.registry_errors += 1
        for listener in self.listeners:
            listener(what)


class Decider:
    """Thread-safe verdicts for images under one policy file (reloaded when its inputs change)."""

    def __init__(
        self,
        policy_path: Path,
        clients: ClientFor,
        settings: DeciderSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy_path = policy_path
        self.clients = clients
        self.settings = settings or DeciderSettings()
        self.stats = CacheStats()
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], _Entry] = {}
        self._tags: dict[tuple[str, str], tuple[str, float]] = {}
        self._flights: dict[tuple[str, ...], Future[Verdict]] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="verify")
        self._checked_at = 0.0
        self.policy, self._fingerprint = self._load()

    # -- the policy --

    def _load(self) -> tuple[Policy, str]:
        from policy.loader import load_policy

        policy = load_policy(self.policy_path)
        return policy, _fingerprint(policy.inputs)

    def current_policy(self) -> tuple[Policy, str]:
        """The policy, reloaded (and the cache emptied) when one of its inputs changed on disk."""
        now = self._clock()
        with self._lock:
            if now - self._checked_at < self.settings.reload_seconds:
                return self.policy, self._fingerprint
            self._checked_at = now
            policy = self.policy
        from policy.reuse import fingerprint

        current = [(path, fingerprint(path)) for path, _ in policy.inputs]
        if _fingerprint(tuple(current)) == self._fingerprint:
            return policy, self._fingerprint
        try:
            loaded, digest = self._load()
        except TrustError:  # a half-written ConfigMap: keep deciding with the last good policy
            return policy, self._fingerprint
        with self._lock:
            self.policy, self._fingerprint = loaded, digest
            self._cache.clear()
            self._tags.clear()
        return loaded, digest

    # -- verdicts --

    def exempt_namespace(self, namespace: str) -> bool:
        policy, _ = self.current_policy()
        return (
            namespace in self.settings.exempt_namespaces or namespace in policy.kubernetes.exempt_namespaces
        )

    def decide(self, image: str, *, pin_tags: bool, deadline: float | None = None) -> Verdict:
        """The verdict for `image` within `deadline` seconds (default: the settings')."""
        started = self._clock()
        budget = self.settings.deadline if deadline is None else deadline
        try:
            reference = Reference.parse(image)
        except UsageError as err:
            return Verdict(image, "invalid", str(err))
        if reference.is_layout:
            return Verdict(image, "invalid", f"{image}: an OCI layout is not an image a kubelet can pull")
        policy, fingerprint = self.current_policy()
        scope = self._exempt_scope(policy, reference)
        if scope is not None:
            return Verdict(image, "exempt", f"{image}: exempt by scope {scope.text}")
        pinned: str | None = None
        if reference.digest is None and pin_tags:
            try:
                digest = self._resolve_tag(reference, max(0.1, budget - (self._clock() - started)))
            except TrustError as err:
                return self._failure(image, policy, reference, err)
            if digest is None:
                return self._timeout(image, policy, reference, budget)
            pinned = f"{image}@{digest}"
            reference = Reference.parse(pinned)
        key = (fingerprint, str(reference), str(self.settings.platform or ""))
        remaining = max(0.0, budget - (self._clock() - started))
        verdict = self._cached_or_flown(key, image, reference, policy, remaining)
        if verdict is None:
            return self._timeout(image, policy, reference, budget)
        if pinned is not None and verdict.allowed:
            return Verdict(
                image, verdict.outcome, verdict.message, pinned, verdict.evaluation, verdict.cached
            )
        return Verdict(image, verdict.outcome, verdict.message, None, verdict.evaluation, verdict.cached)

    def _exempt_scope(self, policy: Policy, reference: Reference) -> Scope | None:
        for scope in self.settings.exempt_images:
            if scope.matches(reference):
                return scope
        return policy.kubernetes.exempts_image(reference)

    def _cached_or_flown(
        self, key: tuple[str, ...], image: str, reference: Reference, policy: Policy, remaining: float
    ) -> Verdict | None:
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry.until > now:
                self.stats.count("hit")
                v = entry.verdict
                return Verdict(image, v.outcome, v.message, None, v.evaluation, cached=True)
            flight = self._flights.get(key)
            if flight is None:
                self.stats.count("miss")
                flight = self._pool.submit(self._verify, key, image, reference, policy)
                self._flights[key] = flight
            else:
                self.stats.count("shared")  # a verification of this image is under way: wait for it
        try:
            return flight.result(timeout=remaining)
        except FutureTimeout:
            return None

    def _verify(self, key: tuple[str, ...], image: str, reference: Reference, policy: Policy) -> Verdict:
        try:
            from policy.remote import evaluate_remote

            evaluation = evaluate_remote(reference, policy, self.clients, platform=self.settings.platform)
            verdict = _from_evaluation(image, evaluation, policy)
            ttl = self.settings.decision_ttl if evaluation.passed else self.settings.denial_ttl
        except TrustError as err:
            verdict = self._failure(image, policy, reference, err)
            ttl = self.settings.denial_ttl if isinstance(err, IntegrityError) else 0.0
        except Exception as err:  # a bug must not take the server down; it denies and is logged
            verdict = Verdict(image, "error", f"{image}: internal error: {type(err).__name__}: {err}")
            ttl = 0.0
        with self._lock:
            self._flights.pop(key, None)
            if ttl > 0:
                self._cache[key] = _Entry(verdict, self._clock() + ttl)
        return verdict

    def _resolve_tag(self, reference: Reference, budget: float) -> str | None:
        key = (reference.api_host, str(reference))
        now = self._clock()
        with self._lock:
            known = self._tags.get(key)
            if known is not None and known[1] > now:
                return known[0]

        def resolve() -> str:
            from pull.pipeline import resolve as resolve_document

            return str(resolve_document(self.clients(reference.api_host), reference).digest)

        future = self._pool.submit(resolve)
        try:
            digest = future.result(timeout=budget)
        except FutureTimeout:
            return None
        with self._lock:
            self._tags[key] = (digest, self._clock() + self.settings.tag_ttl)
        return digest

    def _failure(self, image: str, policy: Policy, reference: Reference, err: TrustError) -> Verdict:
        matched = policy.rule_for(reference)
        if isinstance(err, CouldNotCheck):
            self.stats.count("registry-error")
            outcome, what = "could-not-check", "could not check"
        elif isinstance(err, IntegrityError):
            outcome, what = "integrity-failure", "integrity failure"
        else:
            outcome, what = "invalid", "refused"
        message = f"{image}: {what}: {err} ({_where(policy, matched.rule.line, str(matched))})"
        if matched.rule.mode is Mode.AUDIT and outcome == "could-not-check":
            return Verdict(image, "allow-audit", message)
        return Verdict(image, outcome, message)

    def _timeout(self, image: str, policy: Policy, reference: Reference, budget: float) -> Verdict:
        return self._failure(
            image,
            policy,
            reference,
            CouldNotCheck(
                f"no verdict within the {budget:g} s deadline (registry {reference.registry} slow)"
            ),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _from_evaluation(image: str, evaluation: Evaluation, policy: Policy) -> Verdict:
    rule = evaluation.matched.rule
    where = _where(policy, rule.line, str(evaluation.matched))
    record = evaluation.to_json()
    if evaluation.passed:
        return Verdict(image, "allow", f"{image}: allowed by {where}", evaluation=record)
    reasons = "; ".join(evaluation.reasons) or "not signed as the rule requires"
    if evaluation.admitted:
        return Verdict(image, "allow-audit", f"{image}: audit ({where}): {reasons}", evaluation=record)
    return Verdict(image, "deny", f"{image}: denied by {where}: {reasons}", evaluation=record)


def _where(policy: Policy, line: int, label: str) -> str:
    source = str(policy.source_path) if policy.source_path else "policy"
    return f"{label} at {source}:{line}"


def _fingerprint(inputs: tuple[tuple[Path, str | None], ...] | list[tuple[Path, str | None]]) -> str:
    text = "\n".join(f"{path}\0{digest}" for path, digest in inputs)
    return hashlib.sha256(text.encode()).hexdigest()
