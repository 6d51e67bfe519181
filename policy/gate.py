"""The CI gate: evaluate many references against one policy, concurrently; the worst outcome wins.

Each reference becomes a `GateResult` with the exit code it alone would have (0 allowed, 3 denied,
4 integrity failure, 5 could not check). The gate's exit code is the maximum of them.

By default the gate decides as the admission webhook does (`policy.remote`): the manifests are
fetched and hash-checked, the signatures and attestations verified, and no layer is downloaded —
a deployment's images can weigh gigabytes, and the runtime that pulls them checks every layer
digest against the signed manifest anyway. With `pull=True` each image is pulled into the store
through the verifying pipeline first (what `trust run` does), layers included. Either way every
decision is appended to the store's decision log.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from policy.admission import ClientFor, evaluate, log_decision, log_failure
from policy.evaluate import Evaluation
from policy.model import Policy
from pull.errors import CouldNotCheck, IntegrityError, TrustError, UsageError
from pull.manifest import Platform
from pull.records import dataclass
from pull.reference import Reference
from pull.store import ContentStore


@dataclass(frozen=True)
class GateResult:
    reference: str
    exit_code: int
    message: str
    evaluation: Evaluation | None = None

    @property
    def outcome(self) -> str:
        return {0: "allowed", 3: "denied", 4: "integrity-failure", 5: "could-not-check"}.get(
            self.exit_code, "error"
        )

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "reference": self.reference,
            "outcome": self.outcome,
            "exitCode": self.exit_code,
        }
        record["message"] = self.message
        if self.evaluation is not None:
            record["evaluation"] = self.evaluation.to_json()
        return record


def run_gate(
    references: Sequence[str],
    policy: Policy,
    store: ContentStore,
    clients: ClientFor,
    *,
    platform: Platform | None = None,
    parallel: int = 8,
    pull: bool = False,
) -> list[GateResult]:
    """Evaluate every reference (in input order); never raises for one image's failure."""

    def decide(reference: Reference) -> Evaluation:
        if pull:
            return evaluate(reference, policy, store, clients, platform=platform, artifacts=True).evaluation
        from policy.remote import evaluate_remote

        try:
            evaluation = evaluate_remote(reference, policy, clients, platform=platform)
        except (IntegrityError, CouldNotCheck) as err:
            log_failure(store, policy, reference, err)
            raise
        log_decision(store, policy, evaluation)
        return evaluation

    def one(text: str) -> GateResult:
        try:
            reference = Reference.parse(text)
            evaluation = decide(reference)
        except UsageError as err:
            return GateResult(text, 2, str(err))
        except IntegrityError as err:
            return GateResult(text, 4, str(err))
        except CouldNotCheck as err:
            return GateResult(text, 5, str(err))
        except TrustError as err:
            return GateResult(text, 1, str(err))
        if evaluation.passed:
            return GateResult(text, 0, f"allowed by {evaluation.matched}", evaluation)
        if evaluation.admitted:
            return GateResult(
                text,
                0,
                f"allowed in audit mode by {evaluation.matched}: {'; '.join(evaluation.reasons)}",
                evaluation,
            )
        unknown = evaluation.revocation_unknown
        if unknown is not None:
            return GateResult(text, 5, unknown, evaluation)
        return GateResult(
            text, 3, f"denied by {evaluation.matched}: {'; '.join(evaluation.reasons)}", evaluation
        )

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(references)))) as pool:
        return list(pool.map(one, references))


def worst_exit_code(results: Sequence[GateResult]) -> int:
    return max((result.exit_code for result in results), default=0)
