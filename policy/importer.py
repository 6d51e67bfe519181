"""`trust policy import`: convert the common subset of a containers-policy.json(5) into a policy file.

What converts (see docs/policy.md, "Importing containers-policy.json"):

    default, transports.docker[""]         the default rule (the docker transport's own default wins)
    transports.docker[SCOPE]               a rule; `*.example.com` becomes `*.example.com:*`, because
                                           containers/image ignores the port for wildcard hosts
    reject                                 reject: true
    insecureAcceptAnything                 insecure-accept-anything: true
    sigstoreSigned keyPath(s)/keyData(s)   an authority with cosign-keys (absolute paths) or
                                           cosign-key-pems (keyData, pasted in); rekorPublicKey* → rekor-*
    sigstoreSigned pki (caRootsPath, …)    a cosign-pki authority (ca-roots, ca-intermediates, subject-
                                           email/hostname); caRoots/IntermediatesData are not converted
    several sigstoreSigned in one list     one rule, each its own authority, threshold = their count
                                           (containers-policy ANDs a scope's requirements)

Everything else becomes a one-line warning naming the scope. The conversion fails closed: a scope
whose requirements cannot all be expressed (GPG `signedBy`, `signedBaseLayer`, keyless `fulcio`,
an unreadable key, an unknown field) is written as `reject: true`, never as something weaker. A
`signedIdentity` other than matchRepository / matchRepoDigestOrExact is dropped with a warning;
the rule keeps trust's own check (the signature must name the image's repository), which refuses
what remapIdentity / exactRepository would have accepted. Scopes naming a tag or digest cannot be
expressed and are left out (with a warning): those images fall under the broader rule.

The output is checked by loading it with `policy.loader.load_policy_text` before it is returned,
so `trust policy import` never prints a policy that `trust` would refuse.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from policy.errors import PolicyError
from policy.jsonfile import read_json_file
from policy.loader import load_policy_text
from policy.scope import WILDCARD, parse_scope
from pull.records import dataclass, field
from trust.errors import KeyLoadError
from trust.keys import PublicKey, fingerprint, load_public_key, load_public_key_file, public_key_pem

MAX_CONTAINERS_POLICY_BYTES = 1024 * 1024

_PKI_FIELDS = frozenset(
    {
        "caRootsPath",
        "caRootsData",
        "caIntermediatesPath",
        "caIntermediatesData",
        "subjectEmail",
        "subjectHostname",
    }
)
_SIGSTORE_FIELDS = frozenset(
    {
        "type",
        "keyPath",
        "keyPaths",
        "keyData",
        "keyDatas",
        "fulcio",
        "pki",
        "rekorPublicKeyPath",
        "rekorPublicKeyPaths",
        "rekorPublicKeyData",
        "rekorPublicKeyDatas",
        "signedIdentity",
    }
)
_SAME_REPOSITORY_IDENTITIES = frozenset({"matchRepository", "matchRepoDigestOrExact"})


@dataclass(frozen=True)
class ImportResult:
    """The converted policy (YAML that `load_policy` accepts) and what could not be converted."""

    yaml_text: str
    warnings: list[str]


def import_containers_policy(path: Path) -> ImportResult:
    """Convert the containers-policy.json at `path`. Raises `PolicyError` if it is not one at all.

    Relative key paths are resolved against the file's folder and written as absolute paths.
    """
    source = str(path)
    document = read_json_file(
        path,
        source,
        max_bytes=MAX_CONTAINERS_POLICY_BYTES,
        what="not valid JSON",
        hint="containers-policy.json is strict JSON (containers/image refuses duplicate keys too)",
    )
    if not isinstance(document, dict):
        raise PolicyError("a containers-policy.json must be a JSON object", "check the file", source=source)
    if "default" not in document:
        raise PolicyError(
            "the containers policy has no 'default'",
            'containers-policy.json(5) requires one; add \'"default": [{"type": "reject"}]\'',
            source=source,
        )
    converter = _Converter(Path(path).resolve().parent)
    for key in document:
        if key not in ("default", "transports"):
            converter.warn(f"top-level field {key!r}: unknown in containers-policy.json, ignored")

    transports = document.get("transports", {})
    if not isinstance(transports, dict):
        raise PolicyError("'transports' must be a JSON object", "check the file", source=source)
    for name in transports:
        if name != "docker":
            converter.warn(
                f"transport {name!r}: not converted; trust pulls only from registries ('docker' transport)"
            )
    docker = transports.get("docker", {})
    if not isinstance(docker, dict):
        raise PolicyError("'transports.docker' must be a JSON object", "check the file", source=source)

    if "" in docker:
        default = converter.requirements(docker[""], 'transports.docker[""]')
        default_origin = 'transports.docker[""] (the docker transport\'s default)'
    else:
        default = converter.requirements(document["default"], "default")
        default_origin = "default"

    rules: list[_Rule] = []
    seen: dict[str, str] = {}
    for scope_text, requirements in docker.items():
        if scope_text == "":
            continue
        where = f"docker scope {scope_text!r}"
        try:
            scope = parse_scope(scope_text)
        except PolicyError as exc:
            detail = exc.problem.removeprefix(f"scope {scope_text!r} ")
            converter.warn(f"{where}: not converted: it {detail}; images it named fall under a broader rule")
            continue
        canonical = scope.canonical
        if scope.host_wildcard and scope.port is None:
            canonical += f":{WILDCARD}"  # containers/image strips the port before wildcard matching
        if canonical in seen:
            converter.warn(f"{where}: not converted: it means the same as docker scope {seen[canonical]!r}")
            continue
        seen[canonical] = scope_text
        decision = converter.requirements(requirements, where)
        rules.append(_Rule(canonical, f"transports.docker[{json.dumps(scope_text)}]", decision))

    text = _render(source, converter, rules, _Rule(None, default_origin, default))
    # The output must be a policy trust accepts; if not, that is a bug here, not the user's.
    load_policy_text(text, converter.base_dir, f"{source} (converted)")
    return ImportResult(text, converter.warnings)


@dataclass(frozen=True)
class _Decision:
    kind: str  # "reject" | "accept" | "signed"
    authorities: tuple[str, ...] = ()


_REJECT = _Decision("reject")


@dataclass(frozen=True)
class _Rule:
    scope: str | None
    origin: str
    decision: _Decision


@dataclass
class _Authority:
    name: str
    key_paths: list[str] = field(default_factory=list)
    key_pems: list[str] = field(default_factory=list)
    rekor_paths: list[str] = field(default_factory=list)
    rekor_pems: list[str] = field(default_factory=list)
    fingerprints: frozenset[str] = frozenset()
    pki: dict[str, str] = field(default_factory=dict)
    """A `cosign-pki` authority's fields (ca-roots, ca-intermediates, subject-email/hostname)."""


@dataclass
class _Keys:
    """Keys collected from one set of containers fields (paths and/or base64 data)."""

    paths: list[str] = field(default_factory=list)
    pems: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    first_name: str = ""


class _Unconvertible(Exception):
    """A requirement cannot be expressed; the message is the warning (without the scope)."""


class _Converter:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.warnings: list[str] = []
        self.authorities: dict[tuple[frozenset[str], frozenset[str]], _Authority] = {}

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def requirements(self, requirements: Any, where: str) -> _Decision:
        """A scope's list of requirements (all must hold) as one decision; fails closed."""
        if not isinstance(requirements, list) or not requirements:
            self.warn(f"{where}: the requirements are not a non-empty list; the scope is rejected")
            return _REJECT
        rejected = False
        convertible = True
        authorities: list[_Authority] = []
        for requirement in requirements:
            kind = requirement.get("type") if isinstance(requirement, dict) else None
            try:
                if not isinstance(requirement, dict):
                    raise _Unconvertible("a requirement that is not a JSON object was not converted")
                if kind == "reject":
                    rejected = True
                elif kind == "insecureAcceptAnything":
                    pass  # ANDed with the others, it adds nothing
                elif kind == "sigstoreSigned":
                    authority = self.sigstore(requirement, where)
                    if all(a is not authority for a in authorities):
                        authorities.append(authority)
                elif kind == "signedBy":
                    key_type = str(requirement.get("keyType", "GPGKeys"))
                    what = "X.509 simple signing is" if "X509" in key_type else "GPG signatures are"
                    raise _Unconvertible(
                        f"signedBy ({key_type}) requirement not converted: {what} not supported"
                    )
                elif kind == "signedBaseLayer":
                    raise _Unconvertible(
                        "signedBaseLayer requirement not converted (containers/image does not implement it "
                        "and refuses such images too)"
                    )
                else:
                    raise _Unconvertible(f"requirement of unknown type {kind!r} not converted")
            except _Unconvertible as exc:
                convertible = False
                self.warn(f"{where}: {exc}; the scope is rejected")
        if rejected or not convertible:
            return _REJECT
        if not authorities:
            return _Decision("accept")
        owners: dict[str, str] = {}
        for authority in authorities:
            for fp in authority.fingerprints:
                if fp in owners and owners[fp] != authority.name:
                    self.warn(
                        f"{where}: requirements {owners[fp]!r} and {authority.name!r} share a key, which a "
                        "threshold of distinct signers cannot express; the scope is rejected"
                    )
                    return _REJECT
                owners[fp] = authority.name
        return _Decision("signed", tuple(a.name for a in authorities))

    def sigstore(self, requirement: dict[str, Any], where: str) -> _Authority:
        unknown = sorted(set(requirement) - _SIGSTORE_FIELDS)
        if unknown:
            raise _Unconvertible(f"sigstoreSigned field {unknown[0]!r} is unknown, not converted")
        if "fulcio" in requirement:
            raise _Unconvertible(
                "sigstoreSigned with 'fulcio' (certificate-based) not converted: write a 'keyless' "
                "authority by hand (docs/policy.md)"
            )
        if "pki" in requirement:
            return self.pki(requirement, where)
        sources = [f for f in ("keyPath", "keyPaths", "keyData", "keyDatas") if f in requirement]
        if len(sources) != 1:
            raise _Unconvertible(
                "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas"
                + (f" (it has {', '.join(sources)})" if sources else "")
            )
        keys = self.keys(requirement, "keyPath", "keyData")
        rekor = _Keys()
        rekor_sources = [f for f in requirement if f.startswith("rekorPublicKey")]
        if len(rekor_sources) > 1:
            raise _Unconvertible(f"sigstoreSigned has several Rekor key fields ({', '.join(rekor_sources)})")
        if rekor_sources:
            rekor = self.keys(requirement, "rekorPublicKeyPath", "rekorPublicKeyData")

        identity = requirement.get("signedIdentity")
        identity_type = identity.get("type") if isinstance(identity, dict) else identity
        if identity is not None and identity_type not in _SAME_REPOSITORY_IDENTITIES:
            if identity_type == "matchExact":
                self.warn(
                    f"{where}: signedIdentity matchExact converted to trust's check that the signature names "
                    "the image's repository; trust does not compare tags (pin digests with require-digest)"
                )
            else:
                self.warn(
                    f"{where}: signedIdentity {identity_type!r} not converted: the rule requires the "
                    "signature to name the image's own repository ('ignore-reference: true' accepts mirrors)"
                )
        return self.authority(keys, rekor)

    def pki(self, requirement: dict[str, Any], where: str) -> _Authority:
        """`pki` (an enterprise CA, as podman verifies it) -> a `cosign-pki` authority."""
        others = sorted(f for f in requirement if f.startswith(("key", "rekor", "fulcio")))
        if others:
            raise _Unconvertible(
                f"sigstoreSigned has 'pki' and {others[0]!r}, which containers/image refuses"
            )
        pki = requirement["pki"]
        if not isinstance(pki, dict):
            raise _Unconvertible("sigstoreSigned 'pki' is not a JSON object")
        unknown = sorted(set(pki) - _PKI_FIELDS)
        if unknown:
            raise _Unconvertible(f"pki field {unknown[0]!r} is unknown, not converted")
        for data_field in ("caRootsData", "caIntermediatesData"):
            if data_field in pki:
                raise _Unconvertible(
                    f"pki {data_field} not converted: put the certificates in a PEM file and use "
                    f"{data_field.replace('Data', 'Path')}"
                )
        fields: dict[str, str] = {}
        for source, target in (
            ("caRootsPath", "ca-roots"),
            ("caIntermediatesPath", "ca-intermediates"),
            ("subjectEmail", "subject-email"),
            ("subjectHostname", "subject-hostname"),
        ):
            value = pki.get(source)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise _Unconvertible(f"pki {source} must be a non-empty string")
            fields[target] = str((self.base_dir / value).resolve()) if source.endswith("Path") else value
        if "ca-roots" not in fields:
            raise _Unconvertible("pki needs caRootsPath")
        if "subject-email" not in fields and "subject-hostname" not in fields:
            raise _Unconvertible("pki needs subjectEmail or subjectHostname")
        identity = frozenset(f"pki:{key}={value}" for key, value in fields.items())
        existing = self.authorities.get((identity, frozenset()))
        if existing is not None:
            return existing
        taken = {a.name for a in self.authorities.values()}
        name, number = "pki", 1
        while name in taken:
            number += 1
            name = f"pki-{number}"
        authority = _Authority(name=name, fingerprints=identity, pki=fields)
        self.authorities[(identity, frozenset())] = authority
        return authority

    def keys(self, requirement: dict[str, Any], path_field: str, data_field: str) -> _Keys:
        keys = _Keys()
        for field_name, is_path in (
            (path_field, True),
            (path_field + "s", True),
            (data_field, False),
            (data_field + "s", False),
        ):
            if field_name not in requirement:
                continue
            value = requirement[field_name]
            items = value if field_name.endswith("s") else [value]
            if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
                raise _Unconvertible(f"{field_name} must be a non-empty string or list of strings")
            for index, item in enumerate(items, start=1):
                if is_path:
                    resolved = (self.base_dir / item).resolve()
                    try:
                        key = load_public_key_file(resolved)
                    except KeyLoadError as exc:
                        raise _Unconvertible(f"{field_name} {item}: {exc}") from None
                    keys.paths.append(str(resolved))
                    keys.first_name = keys.first_name or Path(item).stem
                else:
                    key = self.key_data(
                        item, f"{field_name}[{index}]" if field_name.endswith("s") else field_name
                    )
                    keys.pems.append(public_key_pem(key).decode("ascii"))
                    keys.first_name = keys.first_name or "key-data"
                keys.fingerprints.append(fingerprint(key))
        return keys

    @staticmethod
    def key_data(value: str, label: str) -> PublicKey:
        try:
            pem = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _Unconvertible(f"{label} is not base64") from None
        try:
            return load_public_key(pem, source=label)
        except KeyLoadError as exc:
            raise _Unconvertible(f"{label} is not a usable public key ({exc})") from None

    def authority(self, keys: _Keys, rekor: _Keys) -> _Authority:
        """One authority per distinct (keys, Rekor keys) set, shared by every scope that uses it."""
        identity = (frozenset(keys.fingerprints), frozenset(rekor.fingerprints))
        existing = self.authorities.get(identity)
        if existing is not None:
            return existing
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", keys.first_name).strip("-._")[:56] or "key"
        taken = {a.name for a in self.authorities.values()}
        name, number = base, 1
        while name in taken:
            number += 1
            name = f"{base}-{number}"
        authority = _Authority(
            name=name,
            key_paths=keys.paths,
            key_pems=keys.pems,
            rekor_paths=rekor.paths,
            rekor_pems=rekor.pems,
            fingerprints=frozenset(keys.fingerprints),
        )
        self.authorities[identity] = authority
        return authority


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(text, ensure_ascii=False)


def _render(source: str, converter: _Converter, rules: list[_Rule], default: _Rule) -> str:
    out = [
        f"# Converted from {_quote(source)} by `trust policy import`.",
        "# Scopes whose requirements could not all be converted are rejected (see the warnings",
        "# printed on stderr). Review this file before using it: docs/policy.md.",
        "version: 1",
    ]
    # Authorities only of rejected scopes are left out: they would be unused noise.
    used = {name for r in (*rules, default) for name in r.decision.authorities}
    authorities = [a for a in converter.authorities.values() if a.name in used]
    if authorities:
        out.append("authorities:")
        for authority in authorities:
            out.append(f"  {authority.name}:")
            if authority.pki:
                out.append("    cosign-pki:")
                out.extend(f"      {key}: {_quote(value)}" for key, value in authority.pki.items())
            for field_name, paths, pems in (
                ("cosign", authority.key_paths, authority.key_pems),
                ("rekor", authority.rekor_paths, authority.rekor_pems),
            ):
                if paths:
                    out.append(f"    {field_name}-keys:")
                    out.extend(f"      - {_quote(p)}" for p in paths)
                if pems:
                    out.append(f"    {field_name}-key-pems:")
                    for pem in pems:
                        out.append("      - |")
                        out.extend(f"        {line}" for line in pem.strip().splitlines())
    if rules:
        out.append("rules:")
        for rule in rules:
            out.append(f"  # from {rule.origin}")
            out.append(f"  - scope: {_quote(rule.scope or '')}")
            out.extend(_render_decision(rule.decision, "    "))
    out.append(f"# from {default.origin}")
    out.append("default:")
    out.extend(_render_decision(default.decision, "  "))
    return "\n".join(out) + "\n"


def _render_decision(decision: _Decision, indent: str) -> list[str]:
    if decision.kind == "reject":
        return [f"{indent}reject: true"]
    if decision.kind == "accept":
        return [f"{indent}insecure-accept-anything: true"]
    lines = [f"{indent}signed-by: [{', '.join(decision.authorities)}]"]
    if len(decision.authorities) > 1:
        lines.append(
            f"{indent}threshold: {len(decision.authorities)}  # containers-policy requires all of them"
        )
    return lines
