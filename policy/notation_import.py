"""`trust policy import DIR/trustpolicy.json`: convert a Notation trust policy into a policy file.

The Notation document is validated as Notation validates it (version "1.0", named policies,
registry scopes that are fully qualified repositories or one global `*`, one policy per scope,
levels and overrides, `type:name` trust stores, well-formed non-overlapping trusted identities);
an invalid document fails with the reason (exit 2). Trust stores are resolved in Notation's
layout next to the file, `DIR/truststore/x509/{ca,signingAuthority,tsa}/NAME/` (no symlinks).

What converts:

    policy with level strict | permissive | audit   one notation authority per `ca:` store (the
                                                     level and identities copied), one rule per scope
                                                     signed by any of them (threshold 1)
    level skip                                       insecure-accept-anything: true
    registryScopes ["*"]                             the default rule (no global policy: reject)
    a repository below a scope (`SCOPE/x`)           the global policy, as in Notation, through a
                                                     `SCOPE/*` rule (trust scopes are prefixes)

Fails closed, with a warning on stderr: a policy whose `override` changes its level's behaviour,
or that has only `signingAuthority:` stores (trust verifies only the `notary.x509` scheme), is
written as `reject: true`. A `tsa:` store becomes the authority's `tsa-store` (one per authority;
an empty one is left out, so no timestamp is trusted, as in Notation), `verifyTimestamp:
afterCertExpiry` becomes `verify-timestamp: after-cert-expiry`, and the override
`"revocation": "skip"` becomes `revocation: skip` (today's no-check behaviour).

The output is loaded with `policy.loader.load_policy_text` before it is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policy.errors import PolicyError
from policy.importer import ImportResult
from policy.jsonfile import read_json_file
from policy.loader import CERT_SUFFIXES, load_policy_text
from policy.scope import parse_scope
from pull.records import dataclass, field
from trust.notation import overlapping, parse_identity

MAX_TRUST_POLICY_BYTES = 1024 * 1024
NOTATION_VERSION = "1.0"
LEVELS = ("strict", "permissive", "audit", "skip")
_OVERRIDE_VALUES = {
    "authenticity": ("enforce", "log"),
    "authenticTimestamp": ("enforce", "log"),
    "expiry": ("enforce", "log"),
    "revocation": ("enforce", "log", "skip"),
}
_LEVEL_ACTIONS = {
    "strict": {
        "authenticity": "enforce",
        "authenticTimestamp": "enforce",
        "expiry": "enforce",
        "revocation": "enforce",
    },
    "permissive": {
        "authenticity": "enforce",
        "authenticTimestamp": "log",
        "expiry": "log",
        "revocation": "log",
    },
    "audit": {"authenticity": "log", "authenticTimestamp": "log", "expiry": "log", "revocation": "log"},
}
"""What each level does to each overridable validation (the trust policy specification's table)."""
_STORE_TYPES = ("ca", "signingAuthority", "tsa")
_STORE_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
_POLICY_FIELDS = frozenset(
    {"name", "registryScopes", "signatureVerification", "trustStores", "trustedIdentities"}
)


def is_notation_trust_policy(data: bytes) -> bool:
    """Content sniffing for `trust policy import`: Notation documents have `trustPolicies`."""
    return b'"trustPolicies"' in data


@dataclass
class _Converted:
    scopes: list[str]
    origin: str
    decision: str  # "signed" | "reject" | "accept"
    authorities: list[tuple[str, Path, str, list[str], dict[str, str]]] = field(default_factory=list)
    """(authority name, trust store directory, level, trusted identities, further fields:
    tsa-store, verify-timestamp, revocation)."""


def import_notation_policy(path: Path) -> ImportResult:
    """Convert the Notation trust policy at `path`. Raises `PolicyError` when Notation would refuse it."""
    source = str(path)
    document = read_json_file(
        path,
        source,
        max_bytes=MAX_TRUST_POLICY_BYTES,
        what="invalid Notation trust policy: malformed JSON",
        hint="fix the JSON",
    )

    def invalid(problem: str, hint: str = "") -> PolicyError:
        return PolicyError(f"invalid Notation trust policy: {problem}", hint, source=source)

    if not isinstance(document, dict):
        raise invalid("the document is not a JSON object")
    unknown = sorted(set(document) - {"version", "trustPolicies"})
    if unknown:
        raise invalid(
            f"unknown top-level field {unknown[0]!r}", "a trustpolicy.json has 'version' and 'trustPolicies'"
        )
    if document.get("version") != NOTATION_VERSION:
        raise invalid(f"version must be {NOTATION_VERSION!r}, not {document.get('version')!r}")
    policies = document.get("trustPolicies")
    if not isinstance(policies, list) or not policies:
        raise invalid("'trustPolicies' must be a non-empty list")

    base_dir = Path(path).resolve().parent
    warnings: list[str] = []
    converted: list[_Converted] = []
    names: set[str] = set()
    scope_owner: dict[str, str] = {}
    for position, policy in enumerate(policies):
        if not isinstance(policy, dict):
            raise invalid(f"trust policy {position} is not a JSON object")
        name = policy.get("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid(f"trust policy {position} has no name")
        if name in names:
            raise invalid(f"two trust policies are named {name!r}", "give each policy its own name")
        names.add(name)
        what = f"trust policy {name!r}"
        extra = sorted(set(policy) - _POLICY_FIELDS)
        if extra:
            raise invalid(f"{what} has an unknown field {extra[0]!r}")
        scopes = _scopes(policy.get("registryScopes"), what, invalid)
        for scope in scopes:
            if scope == "*" and scope in scope_owner:
                raise invalid(
                    f"more than one trust policy has the global scope '*' ({scope_owner[scope]!r}, {name!r})",
                    "keep one",
                )
            if scope in scope_owner:
                raise invalid(
                    f"registry scope {scope!r} is in both {scope_owner[scope]!r} and {name!r}",
                    "an artifact must have exactly one applicable trust policy",
                )
            scope_owner[scope] = name
        level, overrides, verify_timestamp = _verification(policy.get("signatureVerification"), what, invalid)
        stores = policy.get("trustStores")
        identities = policy.get("trustedIdentities")
        if level == "skip":
            if scopes == ["*"]:
                raise invalid(
                    f"{what} uses level skip with the global scope '*'", "skip needs fully qualified scopes"
                )
            if stores or identities:
                raise invalid(
                    f"{what} skips verification but has trust stores or trusted identities", "remove them"
                )
            converted.append(_Converted(scopes, what, "accept"))
            continue
        store_refs = _stores(stores, what, invalid)
        identity_list = _identities(identities, what, invalid)
        entry = _Converted(scopes, what, "signed")
        extras: dict[str, str] = {}
        if verify_timestamp == "afterCertExpiry":
            extras["verify-timestamp"] = "after-cert-expiry"
        if overrides.get("revocation") == "skip":
            extras["revocation"] = "skip"  # trust's own `revocation: skip`
            overrides = {k: v for k, v in overrides.items() if k != "revocation"}
        changed = {k: v for k, v in overrides.items() if _LEVEL_ACTIONS[level][k] != v}
        if changed:
            warnings.append(
                f"{what}: override {json.dumps(changed)} cannot be expressed (trust applies the levels as "
                "they are); its scopes are rejected"
            )
            entry.decision = "reject"
        for store_type, store_name in store_refs:
            directory = _store_directory(base_dir, store_type, store_name, what, invalid)
            if store_type == "tsa":
                if "tsa-store" in extras:
                    warnings.append(
                        f"{what}: trust store tsa:{store_name} dropped: trust takes one tsa store per "
                        "authority (merge the certificates into one folder)"
                    )
                elif any(p.is_file() for p in directory.iterdir() if p.suffix.lower() in CERT_SUFFIXES):
                    extras["tsa-store"] = str(directory)
            elif store_type == "signingAuthority":
                warnings.append(
                    f"{what}: trust store signingAuthority:{store_name} not converted: trust verifies only "
                    "notary.x509 signatures"
                )
            else:
                authority = _authority_name(name, store_name, len(store_refs), converted)
                entry.authorities.append((authority, directory, level, identity_list, extras))
        if entry.decision == "signed" and not entry.authorities:
            warnings.append(f"{what}: no ca: trust store that trust can use; its scopes are rejected")
            entry.decision = "reject"
        converted.append(entry)

    globals_ = [entry for entry in converted if entry.scopes == ["*"]]
    default = (
        globals_[0] if globals_ else _Converted([], "(no global trust policy: Notation fails)", "reject")
    )
    rules = [entry for entry in converted if entry.scopes != ["*"]]
    text = _render(source, rules, default)
    load_policy_text(text, base_dir, f"{source} (converted)")
    return ImportResult(text, warnings)


# --- validation --------------------------------------------------------------------------------


Invalid = Callable[..., PolicyError]
"""Builds the "invalid Notation trust policy" error: `invalid(problem, hint="")`."""


def _scopes(value: Any, what: str, invalid: Invalid) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise invalid(f"{what} needs 'registryScopes', a non-empty list of strings")
    if len(set(value)) != len(value):
        raise invalid(f"{what} lists a registry scope twice")
    for scope in value:
        if scope == "*":
            continue
        if "*" in scope:
            raise invalid(
                f"{what}: registry scope {scope!r} contains '*'", "write '*' alone, or a full repository"
            )
        registry, slash, repository = scope.partition("/")
        if not slash or not repository or not ("." in registry or ":" in registry or registry == "localhost"):
            raise invalid(
                f"{what}: registry scope {scope!r} is not a fully qualified repository",
                "write REGISTRY/REPOSITORY, e.g. 'registry.example.com/team/app'",
            )
        try:
            parse_scope(scope)
        except PolicyError as exc:
            raise invalid(f"{what}: {exc.problem}", exc.hint) from None
    if "*" in value and len(value) > 1:
        raise invalid(f"{what}: the global scope '*' must be the only scope of its policy")
    return list(value)


def _verification(value: Any, what: str, invalid: Invalid) -> tuple[str, dict[str, str], str]:
    if not isinstance(value, dict):
        raise invalid(f"{what} needs 'signatureVerification' with a 'level'")
    unknown = sorted(set(value) - {"level", "override", "verifyTimestamp"})
    if unknown:
        raise invalid(f"{what}: signatureVerification has an unknown field {unknown[0]!r}")
    if value.get("verifyTimestamp", "always") not in ("always", "afterCertExpiry"):
        raise invalid(f"{what}: verifyTimestamp must be 'always' or 'afterCertExpiry'")
    level = value.get("level")
    if level not in LEVELS:
        raise invalid(f"{what}: level {level!r} is not one of {', '.join(LEVELS)}")
    overrides = value.get("override", {})
    if not isinstance(overrides, dict):
        raise invalid(f"{what}: 'override' must be a JSON object")
    if overrides and level == "skip":
        raise invalid(f"{what}: level skip cannot be overridden")
    for key, action in overrides.items():
        if key == "integrity":
            raise invalid(f"{what}: the integrity validation cannot be overridden")
        if key not in _OVERRIDE_VALUES:
            raise invalid(f"{what}: unknown validation {key!r} in override")
        if action not in _OVERRIDE_VALUES[key]:
            raise invalid(
                f"{what}: override {key}: {action!r} is not one of {', '.join(_OVERRIDE_VALUES[key])}"
            )
    verify_timestamp = str(value.get("verifyTimestamp", "always"))
    return str(level), {str(k): str(v) for k, v in overrides.items()}, verify_timestamp


def _stores(value: Any, what: str, invalid: Invalid) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise invalid(f"{what} needs 'trustStores', a non-empty list like [\"ca:acme\"]")
    result = []
    for text in value:
        store_type, sep, name = text.partition(":")
        if not sep or store_type not in _STORE_TYPES or not _STORE_NAME.match(name):
            raise invalid(
                f"{what}: trust store {text!r} is not TYPE:NAME",
                f"TYPE is one of {', '.join(_STORE_TYPES)}; NAME uses letters, digits, '.', '_', '-'",
            )
        if (store_type, name) in result:
            raise invalid(f"{what} lists trust store {text!r} twice")
        result.append((store_type, name))
    return result


def _identities(value: Any, what: str, invalid: Invalid) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise invalid(f"{what} needs 'trustedIdentities', a non-empty list of strings")
    if "*" in value:
        if len(value) > 1:
            raise invalid(f"{what}: '*' in trustedIdentities must be the only entry")
        return ["*"]
    parsed: list[tuple[str, dict[str, str]]] = []
    for text in value:
        try:
            attributes = parse_identity(text.strip())
        except ValueError as exc:
            raise invalid(f"{what}: {exc}", "write e.g. 'x509.subject: C=US, ST=WA, O=acme'") from None
        for other_text, other in parsed:
            if overlapping(attributes, other):
                raise invalid(f"{what}: trusted identities {other_text!r} and {text!r} overlap")
        parsed.append((text, attributes))
    return [text.strip() for text in value]


def _store_directory(base_dir: Path, store_type: str, name: str, what: str, invalid: Invalid) -> Path:
    directory = base_dir / "truststore" / "x509" / store_type / name
    for part in (base_dir / "truststore", directory.parent.parent, directory.parent, directory):
        if part.is_symlink():
            raise invalid(f"{what}: {part} is a symlink", "Notation refuses symlinks in the trust store")
    if not directory.is_dir():
        raise invalid(
            f"{what}: trust store {store_type}:{name} not found at {directory}",
            "put the certificates in DIR/truststore/x509/TYPE/NAME/ next to the trust policy",
        )
    files = [p for p in directory.iterdir() if p.suffix.lower() in CERT_SUFFIXES]
    links = [p.name for p in files if p.is_symlink()]
    if links:
        raise invalid(
            f"{what}: {links[0]} in trust store {store_type}:{name} is a symlink", "copy the file instead"
        )
    if store_type != "tsa" and not [p for p in files if p.is_file()]:
        raise invalid(f"{what}: trust store {store_type}:{name} holds no certificates ({directory})")
    return directory


def _authority_name(policy: str, store: str, stores: int, converted: list[_Converted]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", policy).strip("-._")[:40] or "policy"
    name = f"notation-{base}" if stores == 1 else f"notation-{base}-{store}"[:64]
    taken = {a[0] for entry in converted for a in entry.authorities}
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    return candidate


# --- output ------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _render(source: str, rules: list[_Converted], default: _Converted) -> str:
    out = [
        f"# Converted from the Notation trust policy {_quote(source)} by `trust policy import`.",
        "# Policies that could not be converted exactly are rejected (see the warnings on stderr).",
        "# Review this file before using it: docs/policy.md.",
        "version: 1",
    ]
    authorities = [a for entry in (*rules, default) if entry.decision == "signed" for a in entry.authorities]
    if authorities:
        out.append("authorities:")
        for name, directory, level, identities, extras in authorities:
            out.append(f"  {name}:")
            out.append("    notation:")
            out.append(f"      trust-store: {_quote(str(directory))}")
            out.append(f"      trusted-identities: [{', '.join(_quote(i) for i in identities)}]")
            out.append(f"      level: {level}")
            out.extend(f"      {key}: {_quote(value)}" for key, value in sorted(extras.items()))
    if rules:
        out.append("rules:")
        for entry in rules:
            for scope in entry.scopes:
                out.append(f"  # from {entry.origin}")
                out.append(f"  - scope: {_quote(scope)}")
                out.extend(_decision(entry, "    "))
                # A Notation scope is one repository, a trust scope also covers those below it.
                # `SCOPE/*` (one component more, so more specific for all of them) gives them the
                # global policy back, as Notation does; a deeper Notation scope is exact and wins.
                out.append(f"  # repositories below {_quote(scope)}: {default.origin}")
                out.append(f"  - scope: {_quote(scope + '/*')}")
                out.extend(_decision(default, "    "))
    out.append(f"# from {default.origin}")
    out.append("default:")
    out.extend(_decision(default, "  "))
    return "\n".join(out) + "\n"


def _decision(entry: _Converted, indent: str) -> list[str]:
    if entry.decision == "reject":
        return [f"{indent}reject: true"]
    if entry.decision == "accept":
        return [f"{indent}insecure-accept-anything: true"]
    return [f"{indent}signed-by: [{', '.join(a[0] for a in entry.authorities)}]"]
