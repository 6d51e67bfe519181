"""Trusted identities of Notary Project trust policies: `x509.subject: C=US, ST=WA, O=acme`.

Parsing only (no cryptography import), so the policy loader can check identities cheaply. The
rules are the trust policy specification's "Trusted Identities Constraints": comma-separated
RDNs (commas, semicolons, backslashes and edge spaces in values escaped with a backslash), C, ST
and O required, and no two identities that one certificate subject could both match.
"""

from __future__ import annotations

X509_SUBJECT_PREFIX = "x509.subject:"
REQUIRED_IDENTITY_ATTRIBUTES = ("C", "ST", "O")


def parse_identity(text: str) -> dict[str, str]:
    """Parse `x509.subject: C=US, ST=WA, O=acme` into {attribute type: value}. Raises ValueError.

    RDNs are separated by unescaped commas; `\\,` `\\;` `\\\\` `\\+` `\\=` `\\"` and an escaped
    leading or trailing space are the escapes. Multi-valued RDNs (`+`), repeated attribute types
    and a missing C, ST or O are refused, as the Notary Project trust policy requires.
    """
    prefix, colon, rest = text.partition(":")
    if not colon or prefix.strip() != X509_SUBJECT_PREFIX[:-1]:
        raise ValueError(f"trusted identity {text!r} does not start with {X509_SUBJECT_PREFIX!r}")
    result: dict[str, str] = {}
    for part in _split_unescaped(rest, ","):
        name, value = _attribute(part, text)
        if name in result:
            raise ValueError(f"trusted identity {text!r} names {name} twice")
        result[name] = value
    missing = [name for name in REQUIRED_IDENTITY_ATTRIBUTES if name not in result]
    if missing:
        raise ValueError(f"trusted identity {text!r} lacks {', '.join(missing)} (C, ST and O are required)")
    return result


def overlapping(first: dict[str, str], second: dict[str, str]) -> bool:
    """Whether one certificate subject could match both identities (one is a subset of the other)."""
    return is_subset(first, second) or is_subset(second, first)


def is_subset(small: dict[str, str], large: dict[str, str]) -> bool:
    return all(large.get(name) == value for name, value in small.items())


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError("a trusted identity ends with a lone backslash")
    parts.append("".join(current))
    return parts


def _attribute(part: str, whole: str) -> tuple[str, str]:
    name, sep, raw_value = part.partition("=")
    name = name.strip().upper()
    if not sep or not name or not name.replace(".", "").isalnum():
        raise ValueError(f"trusted identity {whole!r}: {part.strip()!r} is not TYPE=value")
    raw_value = raw_value.lstrip(" ")
    # A trailing space is part of the value only when escaped ("\ ").
    while raw_value.endswith(" ") and not raw_value.endswith("\\ "):
        raw_value = raw_value[:-1]
    value, index = [], 0
    while index < len(raw_value):
        char = raw_value[index]
        if char == "\\":
            value.append(raw_value[index + 1])
            index += 2
            continue
        if char in "+;":
            raise ValueError(
                f"trusted identity {whole!r}: unescaped {char!r} (multi-valued RDNs are not supported; "
                f"write \\{char} for the character)"
            )
        value.append(char)
        index += 1
    if not value:
        raise ValueError(f"trusted identity {whole!r}: {name} has an empty value")
    return name, "".join(value)
