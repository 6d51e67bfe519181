"""SARIF 2.1.0 for the CI gate: one result per image that did not pass, located at the policy rule.

Code-scanning dashboards (GitHub, GitLab) read `runs[].results[]` with a `ruleId`, a `level`, a
`message.text` and a physical location; the location is the policy rule that decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policy.gate import GateResult

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
RULES = {
    "denied": ("trust/denied", "The policy denied the image (unsigned, wrong signer, tag-only, rejected)."),
    "integrity-failure": ("trust/integrity", "A digest or size did not match what was promised."),
    "could-not-check": (
        "trust/could-not-check",
        "The registry could not be asked (unreachable, auth, throttled).",
    ),
    "error": ("trust/error", "The reference or policy could not be used."),
}


def gate_report(results: Sequence[GateResult], policy_uri: str, version: str) -> dict[str, Any]:
    sarif_results = []
    for result in results:
        if result.exit_code == 0:
            continue
        rule_id, _ = RULES.get(result.outcome, RULES["error"])
        line = result.evaluation.matched.rule.line if result.evaluation else 1
        if result.evaluation and all(a.satisfied for a in result.evaluation.authorities):
            # The signatures passed: the failure is an attestation requirement; point at it.
            unmet = [a.line for a in result.evaluation.attestations if not a.satisfied and a.line]
            line = unmet[0] if unmet else line
        sarif_results.append(
            {
                "ruleId": rule_id,
                "level": "error",
                "message": {"text": f"{result.reference}: {result.message}"},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": policy_uri},
                            "region": {"startLine": max(1, line)},
                        }
                    }
                ],
                "partialFingerprints": {"imageReference": result.reference},
                "properties": {
                    "reference": result.reference,
                    "exitCode": result.exit_code,
                    "digest": str(result.evaluation.digest)
                    if result.evaluation and result.evaluation.digest
                    else None,
                },
            }
        )
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "trust",
                        "version": version,
                        "rules": [
                            {"id": rule_id, "shortDescription": {"text": text}}
                            for rule_id, text in RULES.values()
                        ],
                    }
                },
                "results": sarif_results,
            }
        ],
    }
