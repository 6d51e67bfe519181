"""A policy authority of the keyless kind: a Fulcio certificate bound to an OIDC identity.

Kept apart from the verifier (`trust.sigstore.keyless`) so the policy loader can build it without
importing sigstore-python.
"""

from __future__ import annotations

import re
from pathlib import Path

from pull.records import dataclass


@dataclass(frozen=True)
class KeylessAuthority:
    """A Sigstore keyless identity: a Fulcio certificate whose OIDC issuer and subject match.

    Exactly one of `issuer` / `issuer_regexp` and one of `subject` / `subject_regexp` is set.
    Regexps must match the whole value (`re.fullmatch`), so a missing `$` cannot widen them.
    """

    name: str
    issuer: str | None
    issuer_regexp: re.Pattern[str] | None
    subject: str | None
    subject_regexp: re.Pattern[str] | None
    trusted_root: Path | None = None
    """A Sigstore trusted-root JSON file; None means the public-good instance."""
    line: int = 0
    github_workflow_repository: str | None = None
    """GitHub Actions claims Fulcio copies into the certificate (exact values; None = not checked):
    `owner/repo`, the ref (`refs/heads/main`), the workflow name, the trigger (`push`), the commit."""
    github_workflow_ref: str | None = None
    github_workflow_name: str | None = None
    github_workflow_trigger: str | None = None
    github_workflow_sha: str | None = None

    @property
    def kind(self) -> str:
        return "keyless"

    @property
    def github_claims(self) -> dict[str, str]:
        """The GitHub workflow claims this authority requires, by policy field name."""
        claims = {
            "github-workflow-repository": self.github_workflow_repository,
            "github-workflow-ref": self.github_workflow_ref,
            "github-workflow-name": self.github_workflow_name,
            "github-workflow-trigger": self.github_workflow_trigger,
            "github-workflow-sha": self.github_workflow_sha,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def issuer_matches(self, issuer: str) -> bool:
        if self.issuer_regexp is not None:
            return self.issuer_regexp.fullmatch(issuer) is not None
        return issuer == self.issuer

    def subject_matches(self, subject: str) -> bool:
        if self.subject_regexp is not None:
            return self.subject_regexp.fullmatch(subject) is not None
        return subject == self.subject
