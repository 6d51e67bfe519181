"""Conditions on attestation content: CEL expressions, as Kubernetes admission policies write them.

A rule's attestation requirement may carry `condition: 'predicate.buildDefinition.buildType == "…"'`.
The expression sees three variables, all plain JSON values from the *verified* statement:
`predicate` (the statement's predicate), `statement` (the whole statement) and `subject` (the
statement's subject entry that names the image digest, `{"name", "digest"}`).

The library is `cel-expr-python`, the Python binding of cel-cpp published by Google's CEL team
(the reference implementation family Kubernetes' cel-go belongs to). Chosen over
`common-expression-language` (a Rust binding) because it type-checks undeclared names at compile
time, so a typo in a policy is a load error, and because it imports in ~10 ms where the other's
package pulls in an interactive shell (~350 ms) on import.

An expression is compiled once, when the policy loads; a syntax or name error is a policy error
there (exit 2, with file and line). At evaluation, anything but `true` fails the condition: `false`,
a non-boolean, or a runtime error (a missing field is an error in CEL) — said in one line.
"""

from __future__ import annotations

from typing import Any

from pull.records import dataclass, field

MAX_CONDITION_CHARS = 4096
_VARIABLES = ("predicate", "statement", "subject")


class ConditionError(ValueError):
    """The expression does not compile (the message is cel-cpp's, first line, with the column)."""


@dataclass(frozen=True)
class Condition:
    text: str
    _program: Any = field(repr=False, compare=False, hash=False)

    def holds(self, statement: dict[str, Any], subject: dict[str, Any]) -> tuple[bool, str]:
        """(True, "") when the expression is `true` for this statement; else (False, why)."""
        data = {"predicate": statement.get("predicate"), "statement": statement, "subject": subject}
        try:
            value = self._program.eval(data=data)
            kind = value.type().name()
            result = value.value()
        except Exception as exc:  # cel-cpp raises for values it cannot convert (huge integers …)
            return False, f"condition could not be evaluated: {_first_line(str(exc))}"
        if kind == "ERROR" or kind == "*error*":
            return False, f"condition could not be evaluated: {_first_line(str(result))}"
        if result is True:
            return True, ""
        if kind != "BOOL" and kind != "bool":
            return False, f"condition gave {kind.lower()} {str(result)[:60]!r}, not true or false"
        return False, f"condition is false: {self.text[:200]}"


def compile_condition(text: str) -> Condition:
    """Compile `text`. Raises `ConditionError` for a syntax error, an unknown name, or a type that
    can never be a boolean."""
    if len(text) > MAX_CONDITION_CHARS:
        raise ConditionError(f"the condition is longer than {MAX_CONDITION_CHARS} characters")
    from cel_expr_python import cel

    env = _environment(cel)
    try:
        program = env.compile(text)
    except RuntimeError as exc:
        raise ConditionError(_compile_message(str(exc))) from None
    returned = program.return_type().name()
    if returned not in ("bool", "BOOL", "dyn", "DYN"):
        raise ConditionError(f"the condition gives {returned.lower()}, not a boolean")
    return Condition(text, program)


_ENV: Any = None


def _environment(cel: Any) -> Any:
    global _ENV
    if _ENV is None:
        _ENV = cel.NewEnv(variables={name: cel.Type.DYN for name in _VARIABLES})
    return _ENV


def _compile_message(text: str) -> str:
    """cel-cpp's `INVALID_ARGUMENT: ERROR: <input>:1:16: Syntax error: …` as one line."""
    line = _first_line(text.removeprefix("INVALID_ARGUMENT: "))
    return line.replace("ERROR: <input>:", "at ", 1)


def _first_line(text: str) -> str:
    text = text.strip()
    return (text.splitlines()[0] if text else "unknown error")[:240]
