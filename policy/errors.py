"""Errors of the policy file (loading, linting, importing), built on the roots in `pull/errors.py`.

    TrustError
    └── UsageError
        └── PolicyError     the policy file is unreadable, malformed or inconsistent      (exit 2)

A policy that cannot be loaded is a usage error, never a denial: nothing was evaluated. The
message is one line of the form

    FILE:LINE: what is wrong; write X instead

so that editors and CI logs can jump to the line, and a person knows the fix without the docs.
"""

from __future__ import annotations

from pull.errors import UsageError


class PolicyError(UsageError):
    """A policy file (or a containers-policy.json being imported) cannot be used.

    `problem` says what is wrong, `hint` what to write instead (may be empty). `source` and `line`
    locate it; code that knows only the problem (the scope parser) raises without a location and
    the loader adds it with `at()`.
    """

    def __init__(self, problem: str, hint: str = "", *, source: str | None = None, line: int | None = None):
        self.problem = problem
        self.hint = hint
        self.source = source
        self.line = line
        super().__init__(self._format())

    def at(self, source: str, line: int | None) -> PolicyError:
        """The same error, located in `source` at `line` (1-based)."""
        return PolicyError(self.problem, self.hint, source=source, line=line)

    def _format(self) -> str:
        text = self.problem if not self.hint else f"{self.problem}; {self.hint}"
        if self.source is None:
            return text
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {text}"

    def diagnostics(self) -> str:
        return "Run `trust policy check FILE` after editing; docs/policy.md describes every field."
