"""Load a policy file: YAML in, a fully checked `policy.model.Policy` out, or one `PolicyError`.

Everything that can be wrong is found here, at load time, with the file and line: unknown fields
(with a "did you mean"), duplicate keys, wrong types, bad scopes, missing or malformed key files,
empty lists, undefined authority names, thresholds out of range, contradictory rules. Evaluation
code can then trust the model without re-checking it.

The YAML is read with a SafeLoader subclass that composes the document into nodes (which carry
line numbers) and refuses what a policy never needs but an attacker could use: anchors and aliases
(billion laughs), merge keys, tags that build anything but plain scalars, nesting deeper than
`MAX_DEPTH`, and files over `MAX_POLICY_BYTES`. The node tree is then converted to `_Map`/`_Seq`
values that remember the line of every key and item.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from policy.admitted import ImageLimits, RuntimePermissions
from policy.errors import PolicyError
from policy.model import (
    POLICY_VERSION,
    AttestationRequirement,
    Authority,
    CosignKeyAuthority,
    CosignPkiAuthority,
    KeylessAuthority,
    KubernetesSettings,
    Mode,
    NotationAuthority,
    NotationLevel,
    Policy,
    Rule,
    RuleKind,
    SignTarget,
)
from policy.reuse import MAX_REUSE_SECONDS, digest_bytes, file_fingerprint, folder_fingerprint
from policy.scope import parse_scope
from pull.errors import CouldNotCheck, UsageError
from pull.records import dataclass, field, replace
from pull.userfile import open_regular_file
from trust.errors import KeyLoadError
from trust.keys import TrustedKey, load_public_key, read_key_file
from trust.notation import Revocation, VerifyTimestamp

if TYPE_CHECKING:  # imported where certificates are read: it costs ~20 ms at start-up
    from cryptography import x509

MAX_POLICY_BYTES = 1024 * 1024
"""A policy is a few kilobytes; anything over 1 MiB is refused before parsing."""
MAX_DEPTH = 16
"""The format nests 4 levels deep; a cap keeps hostile nesting from exhausting the stack."""
MAX_CERT_FILE_BYTES = 1024 * 1024
MAX_TRUST_STORE_FILES = 1000
_DURATION = re.compile(r"(0|[1-9][0-9]{0,5})(s|m|h)")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600}
CERT_SUFFIXES = (".crt", ".pem", ".cer")

# Field names, in the order the docs list them. tests/test_policy_file.py checks that
# policy/schema.json names exactly these, so the schema and the loader cannot drift apart.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
TOP_FIELDS = (
    "version",
    "reuse-decisions",
    "allow-nondistributable-urls",
    "authorities",
    "rules",
    "default",
    "kubernetes",
)
KUBERNETES_FIELDS = ("exempt-namespaces", "exempt-images")
COSIGN_FIELDS = ("cosign-keys", "cosign-key-pems", "rekor-keys", "rekor-key-pems")
AUTHORITY_FIELDS = (*COSIGN_FIELDS, "keyless", "notation", "cosign-pki")
MAX_PEM_BUNDLE_BYTES = 1024 * 1024
PKI_FIELDS = ("ca-roots", "ca-intermediates", "subject-email", "subject-hostname")
KEYLESS_FIELDS = (
    "issuer",
    "issuer-regexp",
    "subject",
    "subject-regexp",
    "trusted-root",
    "github-workflow-repository",
    "github-workflow-ref",
    "github-workflow-name",
    "github-workflow-trigger",
    "github-workflow-sha",
)
NOTATION_FIELDS = (
    "trust-store",
    "trusted-identities",
    "level",
    "tsa-store",
    "verify-timestamp",
    "revocation",
)
DEFAULT_FIELDS = (
    "signed-by",
    "threshold",
    "mode",
    "require-digest",
    "sign-target",
    "ignore-reference",
    "reject",
    "insecure-accept-anything",
    "attestations",
    "limits",
    "runtime",
)
RUNTIME_FIELDS = {"allow-privileged": "allow_privileged"}
LIMIT_FIELDS = {
    "max-layers": "max_layers",
    "max-unpacked-bytes": "max_unpacked_bytes",
    "max-files": "max_files",
}
# Far above any real image, far below what would overflow a C long: a typo of 40 digits is refused.
_MAX_LIMIT = 1 << 62
ATTESTATION_FIELDS = ("name", "predicate-type", "signed-by", "condition")
RULE_FIELDS = ("scope", *DEFAULT_FIELDS)

_KIND_FIELDS = {
    RuleKind.SIGNED: "signed-by",
    RuleKind.REJECT: "reject",
    RuleKind.ACCEPT_ANYTHING: "insecure-accept-anything",
}
# Which optional fields mean something for each kind of rule; the rest are refused as no-ops,
# because a field that silently does nothing ("threshold" on a reject rule) hides a mistake.
_FIELDS_FOR_KIND = {
    RuleKind.SIGNED: set(RULE_FIELDS) - {"reject", "insecure-accept-anything"},
    RuleKind.REJECT: {"scope", "reject", "mode"},
    RuleKind.ACCEPT_ANYTHING: {"scope", "insecure-accept-anything", "require-digest", "limits", "runtime"},
}
_AUTHORITY_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
_YAML_MAP = "tag:yaml.org,2002:map"
_YAML_SEQ = "tag:yaml.org,2002:seq"
_YAML_MERGE = "tag:yaml.org,2002:merge"

_E = TypeVar("_E", bound=StrEnum)


def load_policy(path: Path) -> Policy:
    """Read and check the policy file at `path`. Raises `PolicyError` (exit 2)."""
    source = str(path)
    try:
        with open_regular_file(path) as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
            # A pipe or a device is not a file a later run could read again (`policy.reuse`).
            regular = stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except OSError as exc:
        raise PolicyError(
            f"cannot read the policy file: {exc.strerror or exc}", "check the path", source=source
        ) from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"the policy file is larger than {MAX_POLICY_BYTES} bytes",
            "a policy is a few kilobytes; check that this is the right file",
            source=source,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"the policy file is not UTF-8 text (byte {exc.start})", "save it as UTF-8", source=source
        ) from None
    policy = load_policy_text(text, Path(path).parent, source)
    # The policy's own bytes as read, first among its inputs.
    itself = (Path(path).absolute(), digest_bytes(data) if regular else None)
    return replace(policy, source_path=Path(path), inputs=(itself, *policy.inputs))


def load_policy_text(text: str, base_dir: Path, source_name: str = "<policy>") -> Policy:
    """Check a policy given as text; relative paths in it are resolved against `base_dir`."""
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"the policy is larger than {MAX_POLICY_BYTES} bytes",
            "a policy is a few kilobytes; check that this is the right file",
            source=source_name,
        )
    document = _parse_yaml(text, source_name)
    # Absolute, symlinks kept: a key reached through a re-pointed `current/` link is another key.
    return _Builder(source_name, Path(base_dir).absolute()).policy(document)


# --- YAML with line numbers ------------------------------------------------------------------


@dataclass
class _Map:
    line: int
    values: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Seq:
    line: int
    items: list[Any] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and deep nesting while composing nodes."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            # Refused outright rather than capped: a policy never needs them, and an expanded
            # alias tree (billion laughs) costs memory before any cap could count it.
            raise PolicyError(
                "YAML anchors and aliases (&name, *name) are not allowed in a policy file",
                "write each value out in full",
                source=self.source,
                line=_line(event.start_mark),
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise PolicyError(
                f"the document is nested more than {MAX_DEPTH} levels deep",
                "a policy nests only a few levels; check the indentation",
                source=self.source,
                line=_line(event.start_mark),
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(mark: Any) -> int | None:
    """1-based line of a yaml `Mark` (pure-Python or libyaml flavour), None without one."""
    return int(mark.line) + 1 if mark is not None else None


def _parse_yaml(text: str, source: str) -> Any:
    try:
        # The reader checks every character when it is built: a NUL or a control character
        # (ReaderError) is found here, before any parsing.
        loader = _StrictLoader(text, source)
    except yaml.reader.ReaderError as exc:
        raise PolicyError(
            f"not valid YAML: character U+{int(exc.character):04X} is not allowed",
            "remove control characters and NUL bytes; a policy is plain text",
            source=source,
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError("the policy file is empty", "start it with 'version: 1'", source=source, line=1)
        return _to_value(loader, node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "syntax error").strip()
        raise PolicyError(
            f"not valid YAML: {problem}",
            "check the indentation, quoting and the ':' after each key",
            source=source,
            line=_line(mark),
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(
            f"not valid YAML: {exc}", "save the file as plain UTF-8 text", source=source
        ) from None
    finally:
        loader.dispose()


def _to_value(loader: _StrictLoader, node: yaml.Node) -> Any:
    line = _line(node.start_mark) or 0

    def refuse(problem: str, hint: str, at: int | None = line) -> PolicyError:
        return PolicyError(problem, hint, source=loader.source, line=at)

    if isinstance(node, yaml.MappingNode):
        if node.tag != _YAML_MAP:
            raise refuse(f"YAML tag {node.tag!r} is not allowed", "remove the tag")
        mapping = _Map(line)
        for key_node, value_node in node.value:
            key_line = _line(key_node.start_mark) or line
            if key_node.tag == _YAML_MERGE:
                raise refuse("YAML merge keys ('<<') are not allowed", "write each field out", key_line)
            key = _to_value(loader, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise refuse(
                    f"key {getattr(key_node, 'value', '?')!r} is not a string",
                    "write field names as plain words; quote names such as 'on' or 'yes'",
                    key_line,
                )
            if key in mapping.values:
                raise refuse(
                    f"duplicate key {key!r} (first at line {mapping.key_lines[key]})",
                    "keep only one of them",
                    key_line,
                )
            value = _to_value(loader, value_node)
            if isinstance(value, _Map | _Seq):
                # A missing field inside `keyless:` is best reported at `keyless:`, not at its first child.
                value.line = key_line
            mapping.values[key] = value
            mapping.key_lines[key] = key_line
        return mapping
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _YAML_SEQ:
            raise refuse(f"YAML tag {node.tag!r} is not allowed", "remove the tag")
        sequence = _Seq(line)
        for item in node.value:
            sequence.items.append(_to_value(loader, item))
            sequence.item_lines.append(_line(item.start_mark) or line)
        return sequence
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError:
        raise refuse(f"YAML tag {node.tag!r} is not allowed", "remove the tag") from None
    except ValueError:  # an integer of more than 4300 digits (CVE-2020-10735's limit), say
        text = str(getattr(node, "value", ""))
        raise refuse(
            f"value {text[:20]}… ({len(text)} characters) cannot be read as a number",
            "write a number of sensible size, or quote it if it is text",
        ) from None


# --- building the model ----------------------------------------------------------------------


def _describe_type(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _Seq):
        return "a list"
    if isinstance(value, _Map):
        return "a mapping"
    return f"a {type(value).__name__}"


def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "expected one of: " + ", ".join(choices) if choices else "define it first"


class _Section:
    """One mapping of the file (a rule, an authority, …): typed field access with located errors."""

    def __init__(
        self,
        builder: _Builder,
        node: _Map,
        what: str,
        known: Sequence[str],
        hints: dict[str, str] | None = None,
    ):
        self.builder = builder
        self.node = node
        self.what = what
        for key in node.values:
            if key not in known:
                hint = (hints or {}).get(key) or _suggestion(key, known)
                raise self.error(key, f"unknown field {key!r} in {what}", hint)

    def has(self, key: str) -> bool:
        return key in self.node.values

    def line(self, key: str | None = None) -> int:
        return self.node.key_lines.get(key, self.node.line) if key is not None else self.node.line

    def error(self, key: str | None, problem: str, hint: str) -> PolicyError:
        return PolicyError(problem, hint, source=self.builder.source, line=self.line(key))

    def _typed(self, key: str, kind: type, example: str) -> Any:
        value = self.node.values[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(
                key,
                f"{key!r} in {self.what} must be {_expected(kind)}, not {_describe_type(value)}",
                f"write e.g. '{example}'",
            )
        return value

    def string(self, key: str, example: str) -> str | None:
        if not self.has(key):
            return None
        value: str = self._typed(key, str, example)
        if not value.strip():
            raise self.error(key, f"{key!r} in {self.what} is empty", f"write e.g. '{example}'")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value: bool = self._typed(key, bool, f"{key}: {str(not default).lower()}")
        return value

    def integer(self, key: str, default: int, example: str) -> int:
        if not self.has(key):
            return default
        value: int = self._typed(key, int, example)
        return value

    def choice(self, key: str, enum: type[_E], default: _E, refused: dict[str, str] | None = None) -> _E:
        if not self.has(key):
            return default
        choices = [member.value for member in enum]
        value = self._typed(key, str, f"{key}: {choices[0]}")
        if refused and value in refused:
            raise self.error(key, f"{key} {value!r} is not accepted in {self.what}", refused[value])
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"write e.g. '{key}: {default.value}'"
            raise self.error(key, f"{key} {value!r} in {self.what} is not one of {', '.join(choices)}", hint)
        return enum(value)

    def mapping(self, key: str, example: str) -> _Map | None:
        if not self.has(key):
            return None
        value: _Map = self._typed(key, _Map, example)
        return value

    def strings(self, key: str, example: str, what_items: str) -> list[tuple[str, int]]:
        """A non-empty list of non-empty strings, with each item's line."""
        value: _Seq = self._typed(key, _Seq, example)
        if not value.items:
            raise self.error(
                key, f"{key!r} in {self.what} is empty", f"list at least one {what_items}, e.g. '{example}'"
            )
        result = []
        for item, line in zip(value.items, value.item_lines, strict=True):
            if not isinstance(item, str) or not item.strip():
                raise PolicyError(
                    f"an item of {key!r} in {self.what} is {_describe_type(item)}, not a {what_items}",
                    f"write e.g. '{example}'",
                    source=self.builder.source,
                    line=line,
                )
            result.append((item, line))
        return result


def _expected(kind: type) -> str:
    names = {str: "a string", bool: "true or false", int: "a whole number", _Seq: "a list", _Map: "a mapping"}
    return names.get(kind, kind.__name__)


class _Builder:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.inputs: list[tuple[Path, str | None]] = []
        """Each file or folder the policy names, with a digest of what was read (`Policy.inputs`)."""

    def fail(self, problem: str, hint: str, line: int | None) -> PolicyError:
        return PolicyError(problem, hint, source=self.source, line=line)

    # -- top level --

    def policy(self, document: Any) -> Policy:
        if not isinstance(document, _Map):
            raise self.fail(
                f"the policy must be a mapping, not {_describe_type(document)}",
                "start it with 'version: 1' and give 'rules' and 'default'",
                getattr(document, "line", 1),
            )
        top = _Section(self, document, "the policy", TOP_FIELDS)
        if not top.has("version"):
            raise top.error(None, "the policy has no 'version'", "write 'version: 1' as its first line")
        version = top.node.values["version"]
        if type(version) is not int or version != POLICY_VERSION:  # not 1.0, not true
            raise top.error("version", f"unsupported policy version {version!r}", "write 'version: 1'")
        authorities = self.authorities(
            top.mapping("authorities", "authorities: {release: {cosign-keys: [cosign.pub]}}")
        )
        rules = self.rules(top, authorities)
        default_node = top.mapping("default", "default: {reject: true}")
        if default_node is None:
            raise top.error(
                None,
                "the policy has no 'default' rule",
                "add 'default: {reject: true}' for images that no rule's scope matches",
            )
        default = self.rule(default_node, None, authorities)
        return Policy(
            rules=tuple(rules),
            default=default,
            authorities=MappingProxyType(dict(authorities)),
            inputs=tuple(dict.fromkeys(self.inputs)),
            reuse_seconds=self.reuse_seconds(top),
            kubernetes=self.kubernetes(top),
            allow_nondistributable_urls=top.boolean("allow-nondistributable-urls", False),
        )

    def kubernetes(self, top: _Section) -> KubernetesSettings:
        node = top.mapping("kubernetes", "kubernetes: {exempt-namespaces: [kube-system]}")
        if node is None:
            return KubernetesSettings()
        section = _Section(self, node, "the kubernetes section", KUBERNETES_FIELDS)
        namespaces = []
        if section.has("exempt-namespaces"):
            for name, line in section.strings(
                "exempt-namespaces", "exempt-namespaces: [kube-system]", "namespace"
            ):
                if _NAMESPACE.fullmatch(name) is None:
                    raise self.fail(
                        f"{name!r} is not a Kubernetes namespace name",
                        "namespaces are lowercase letters, digits and '-', at most 63 characters",
                        line,
                    )
                namespaces.append(name)
        scopes = []
        if section.has("exempt-images"):
            for text, line in section.strings("exempt-images", "exempt-images: [registry.k8s.io/*]", "scope"):
                try:
                    scopes.append(parse_scope(text))
                except PolicyError as exc:
                    raise exc.at(self.source, line) from None
        return KubernetesSettings(tuple(namespaces), tuple(scopes), line=top.line("kubernetes"))

    def reuse_seconds(self, top: _Section) -> int:
        if not top.has("reuse-decisions"):
            return 0
        value = top.node.values["reuse-decisions"]
        if type(value) is int and value == 0:  # `reuse-decisions: 0`, not `false`
            return 0
        text = top.string("reuse-decisions", "reuse-decisions: 10m")
        assert text is not None
        match = _DURATION.fullmatch(text.strip())
        if match is None:
            raise top.error(
                "reuse-decisions",
                f"reuse-decisions {text!r} is not a duration",
                "write a number and a unit, s, m or h (e.g. 10m), or 0 to never reuse",
            )
        seconds = int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
        if seconds > MAX_REUSE_SECONDS:
            raise top.error(
                "reuse-decisions",
                f"reuse-decisions {text} is longer than a day",
                "use at most 24h: a reused decision does not see signatures removed from the registry",
            )
        return seconds

    # -- authorities --

    def authorities(self, node: _Map | None) -> dict[str, Authority]:
        result: dict[str, Authority] = {}
        if node is None:
            return result
        for name, value in node.values.items():
            line = node.key_lines[name]
            if not _AUTHORITY_NAME.fullmatch(name):
                raise self.fail(
                    f"authority name {name!r} is not allowed",
                    "use up to 64 letters, digits, '.', '_' and '-', starting and ending with a letter/digit",
                    line,
                )
            if not isinstance(value, _Map):
                raise self.fail(
                    f"authority {name!r} must be a mapping, not {_describe_type(value)}",
                    f"write e.g. '{name}: {{cosign-keys: [cosign.pub]}}'",
                    line,
                )
            result[name] = self.authority(name, value)
        return result

    def authority(self, name: str, node: _Map) -> Authority:
        what = f"authority {name!r}"
        section = _Section(self, node, what, AUTHORITY_FIELDS)
        kinds = [
            k
            for k in ("cosign-keys", "cosign-key-pems", "keyless", "notation", "cosign-pki")
            if section.has(k)
        ]
        if not kinds:
            raise section.error(
                None,
                f"{what} names no signer",
                "give it 'cosign-keys: [FILE.pub]', 'keyless: {issuer: …, subject: …}' "
                "or 'notation: {trust-store: …}'",
            )
        families = {"cosign" if k in ("cosign-keys", "cosign-key-pems") else k for k in kinds}
        if len(families) > 1:
            second = kinds[-1]
            raise section.error(
                second,
                f"{what} mixes {' and '.join(sorted(families))} signers",
                "an authority is one kind of signer: split it in two and list both in 'signed-by'",
            )
        family = families.pop()
        if family != "cosign":
            for rekor in ("rekor-keys", "rekor-key-pems"):
                if section.has(rekor):
                    raise section.error(
                        rekor,
                        f"{rekor!r} applies only to cosign-keys authorities, not to {family} in {what}",
                        "remove it"
                        + ("; a keyless trusted-root carries the Rekor keys" if family == "keyless" else ""),
                    )
        if family == "keyless":
            keyless = section.mapping("keyless", "keyless: {issuer: https://…, subject: …}")
            assert keyless is not None
            return self.keyless(name, keyless, node.line)
        if family == "notation":
            notation = section.mapping("notation", "notation: {trust-store: truststore/x509/ca/corp}")
            assert notation is not None
            return self.notation(name, notation, node.line)
        if family == "cosign-pki":
            pki = section.mapping("cosign-pki", "cosign-pki: {ca-roots: ca.pem, subject-email: …}")
            assert pki is not None
            return self.cosign_pki(name, pki, node.line)
        keys = self.keys(section, name, "cosign-keys", "cosign-key-pems", "cosign")
        rekor_keys: tuple[TrustedKey, ...] = ()
        if section.has("rekor-keys") or section.has("rekor-key-pems"):
            rekor_keys = self.keys(section, name, "rekor-keys", "rekor-key-pems", "rekor")
        return CosignKeyAuthority(name=name, keys=keys, rekor_keys=rekor_keys, line=node.line)

    def cosign_pki(self, name: str, node: _Map, line: int) -> CosignPkiAuthority:
        what = f"cosign-pki authority {name!r}"
        section = _Section(self, node, what, PKI_FIELDS)
        roots_text = section.string("ca-roots", "ca-roots: pki/roots.pem")
        if roots_text is None:
            raise section.error(
                None, f"{what} has no 'ca-roots'", "add 'ca-roots: FILE.pem' (the CA root certificates)"
            )
        roots_path, roots = self.pem_certificates(section, "ca-roots", roots_text)
        intermediates: tuple[x509.Certificate, ...] = ()
        intermediates_text = section.string("ca-intermediates", "ca-intermediates: pki/intermediates.pem")
        if intermediates_text is not None:
            _, intermediates = self.pem_certificates(section, "ca-intermediates", intermediates_text)
        email = section.string("subject-email", "subject-email: release@example.com")
        hostname = section.string("subject-hostname", "subject-hostname: build.example.com")
        if email is None and hostname is None:
            raise section.error(
                None,
                f"{what} names no subject",
                "add 'subject-email: …' and/or 'subject-hostname: …' (the certificate's SAN)",
            )
        return CosignPkiAuthority(
            name=name,
            roots=roots,
            intermediates=intermediates,
            subject_email=email,
            subject_hostname=hostname,
            roots_path=roots_path.resolve(),
            line=line,
        )

    def pem_certificates(
        self, section: _Section, key: str, text: str
    ) -> tuple[Path, tuple[x509.Certificate, ...]]:
        from cryptography import x509

        line = section.line(key)
        path = self.path(text, line, key, "a PEM file of CA certificates")
        try:
            with open_regular_file(path) as handle:
                data = handle.read(MAX_PEM_BUNDLE_BYTES + 1)
            if len(data) > MAX_PEM_BUNDLE_BYTES:
                raise ValueError(f"larger than {MAX_PEM_BUNDLE_BYTES} bytes")
            certificates = tuple(x509.load_pem_x509_certificates(data))
        except (OSError, ValueError) as exc:
            raise self.fail(
                f"{key} {text} cannot be read as PEM certificates ({str(exc)[:80]})",
                "write the path of a PEM file with -----BEGIN CERTIFICATE----- blocks",
                line,
            ) from None
        self.inputs.append((path, digest_bytes(data)))
        return path, certificates

    def keys(
        self, section: _Section, name: str, files_field: str, pems_field: str, label: str
    ) -> tuple[TrustedKey, ...]:
        keys: list[tuple[TrustedKey, int]] = []
        if section.has(files_field):
            for text, line in section.strings(
                files_field, f"{files_field}: [keys/{label}.pub]", "key file path"
            ):
                keys.append((self.key_file(name, text, line), line))
        if section.has(pems_field):
            items = section.strings(
                pems_field, f"{pems_field}: ['-----BEGIN PUBLIC KEY-----…']", "PEM public key"
            )
            for index, (text, line) in enumerate(items, start=1):
                key_name = f"{name}:{pems_field}[{index}]"
                try:
                    keys.append(
                        (TrustedKey(key_name, load_public_key(text.encode("utf-8"), source=key_name)), line)
                    )
                except KeyLoadError as exc:
                    raise self.fail(
                        f"inline key {index} of {pems_field!r} in authority {name!r} cannot be used: {exc}",
                        "paste a PEM 'PUBLIC KEY' block (as in cosign.pub) under a '|' block scalar",
                        line,
                    ) from None
        seen: dict[str, str] = {}
        for key, line in keys:
            if key.fingerprint in seen:
                raise self.fail(
                    f"{key.name} is the same key as {seen[key.fingerprint]}",
                    "list each key once",
                    line,
                )
            seen[key.fingerprint] = key.name
        return tuple(key for key, _ in keys)

    def key_file(self, authority: str, text: str, line: int) -> TrustedKey:
        from trust.keys import is_reference

        if is_reference(text):
            return self.key_reference(authority, text, line)
        path = self.path(text, line, "key file", "a PEM public key")
        if not path.is_file():
            raise self.fail(
                f"key file {text} is not a regular file",
                "write the path of a PEM public key (as in cosign.pub)",
                line,
            )
        try:
            data = read_key_file(path)
            self.inputs.append((path, digest_bytes(data)))
            return TrustedKey(f"{authority}:{text}", load_public_key(data, source=str(path)))
        except KeyLoadError as exc:
            raise self.fail(
                f"key file {text} of authority {authority!r} cannot be used: {exc}",
                "write the path of a PEM public key (as in cosign.pub)",
                line,
            ) from None

    def key_reference(self, authority: str, text: str, line: int) -> TrustedKey:
        """A key named by URI (`pkcs11:`, `awskms://`, `env://`): its public key is read now, from the
        token, the KMS or the environment. A decision that depends on it is never reused (the key
        behind an alias can change without the policy file changing)."""
        from trust.keys import public_key_for

        try:
            public_key = public_key_for(text)
        except (UsageError, CouldNotCheck) as exc:
            raise self.fail(
                f"key {text.split('?', 1)[0][:200]} of authority {authority!r} cannot be used: {exc}",
                "check the URI, the PIN (TRUST_PKCS11_PIN) or the cloud credentials",
                line,
            ) from None
        self.inputs.append((Path(text.split("?", 1)[0]), None))
        return TrustedKey(f"{authority}:{text.split('?', 1)[0]}", public_key)

    def path(self, text: str, line: int, what: str, holding: str) -> Path:
        """`text` resolved against the policy's folder; refuses a path that does not exist."""
        path = Path(text) if Path(text).is_absolute() else self.base_dir / text
        if not path.exists():
            where = "" if Path(text).is_absolute() else f" (relative to the policy's folder {self.base_dir})"
            raise self.fail(
                f"{what} {text} not found{where}",
                f"write the path of {holding}, relative to the policy's folder or absolute",
                line,
            )
        return path

    def keyless(self, name: str, node: _Map, line: int) -> KeylessAuthority:
        what = f"keyless authority {name!r}"
        section = _Section(self, node, what, KEYLESS_FIELDS)
        issuer, issuer_regexp = self.exact_or_regexp(
            section, "issuer", "issuer: https://token.actions.githubusercontent.com"
        )
        subject, subject_regexp = self.exact_or_regexp(
            section, "subject", "subject-regexp: ^https://github.com/acme/.*$"
        )
        trusted_root: Path | None = None
        root_text = section.string("trusted-root", "trusted-root: roots/trusted_root.json")
        if root_text is not None:
            trusted_root = self.path(
                root_text, section.line("trusted-root"), "trusted root", "a Sigstore trusted_root.json"
            )
            if not trusted_root.is_file():
                raise section.error(
                    "trusted-root",
                    f"trusted root {root_text} is not a regular file",
                    "write the path of a trusted_root.json",
                )
            # Hashed now, before any verification reads it: a root replaced in between can only
            # make a recorded decision fail to match, never vouch for a root it was not made with.
            self.inputs.append((trusted_root, file_fingerprint(trusted_root)))
        return KeylessAuthority(
            name=name,
            issuer=issuer,
            issuer_regexp=issuer_regexp,
            subject=subject,
            subject_regexp=subject_regexp,
            trusted_root=trusted_root.resolve() if trusted_root else None,
            line=line,
            github_workflow_repository=section.string(
                "github-workflow-repository", "github-workflow-repository: acme/app"
            ),
            github_workflow_ref=section.string("github-workflow-ref", "github-workflow-ref: refs/heads/main"),
            github_workflow_name=section.string("github-workflow-name", "github-workflow-name: release"),
            github_workflow_trigger=section.string(
                "github-workflow-trigger", "github-workflow-trigger: push"
            ),
            github_workflow_sha=section.string("github-workflow-sha", "github-workflow-sha: 0123abcd…"),
        )

    def exact_or_regexp(
        self, section: _Section, key: str, example: str
    ) -> tuple[str | None, re.Pattern[str] | None]:
        regexp_key = f"{key}-regexp"
        if section.has(key) and section.has(regexp_key):
            raise section.error(
                regexp_key,
                f"{section.what} gives both {key!r} and {regexp_key!r}",
                f"keep one: {key!r} for an exact value, {regexp_key!r} for a pattern",
            )
        if not section.has(key) and not section.has(regexp_key):
            raise section.error(
                None, f"{section.what} has no {key!r} or {regexp_key!r}", f"add e.g. '{example}'"
            )
        exact = section.string(key, example)
        pattern_text = section.string(regexp_key, example)
        if pattern_text is None:
            return exact, None
        try:
            return None, re.compile(pattern_text)
        except re.error as exc:
            raise section.error(
                regexp_key,
                f"{regexp_key!r} of {section.what} is not a valid regular expression ({exc})",
                "write a Python regular expression; it must match the whole value",
            ) from None

    def notation(self, name: str, node: _Map, line: int) -> NotationAuthority:
        what = f"notation authority {name!r}"
        section = _Section(self, node, what, NOTATION_FIELDS)
        store_text = section.string("trust-store", "trust-store: truststore/x509/ca/corp")
        if store_text is None:
            raise section.error(
                None,
                f"{what} has no 'trust-store'",
                "add 'trust-store: DIRECTORY' holding the CA certificates",
            )
        store_line = section.line("trust-store")
        store = self.path(store_text, store_line, "trust store", "a directory of CA certificates")
        if not store.is_dir():
            raise self.fail(
                f"trust store {store_text} is not a directory",
                "write the directory that holds the *.crt files",
                store_line,
            )
        certificates = self.certificates(store, store_text, store_line)
        if not section.has("trusted-identities"):
            raise section.error(
                None,
                f"{what} has no 'trusted-identities'",
                'add e.g. \'trusted-identities: ["x509.subject: C=US, O=acme"]\' (or ["*"] for any)',
            )
        identities = section.strings(
            "trusted-identities", 'trusted-identities: ["x509.subject: C=US, O=acme"]', "identity"
        )
        for text, item_line in identities:
            if text == "*":
                if len(identities) > 1:
                    raise self.fail(
                        "'*' in trusted-identities must be the only entry",
                        'write either ["*"] or the list of subjects',
                        item_line,
                    )
                continue
            prefix, sep, subject = text.partition(":")
            if not sep or prefix.strip() != "x509.subject" or "=" not in subject:
                raise self.fail(
                    f"trusted identity {text!r} is not 'x509.subject: DN'",
                    "write e.g. 'x509.subject: C=US, ST=WA, O=acme'",
                    item_line,
                )
        self.notation_identities(identities)
        level = section.choice(
            "level",
            NotationLevel,
            NotationLevel.STRICT,
            refused={
                "skip": "a rule that checks nothing must say so: "
                "use 'insecure-accept-anything: true' on the rule instead",
            },
        )
        tsa_store: Path | None = None
        tsa_certificates: tuple[x509.Certificate, ...] = ()
        tsa_text = section.string("tsa-store", "tsa-store: truststore/x509/tsa/corp")
        if tsa_text is not None:
            tsa_line = section.line("tsa-store")
            tsa_store = self.path(
                tsa_text, tsa_line, "tsa trust store", "a directory of TSA root certificates"
            )
            if not tsa_store.is_dir():
                raise self.fail(
                    f"tsa trust store {tsa_text} is not a directory",
                    "write the directory that holds the timestamp authorities' root *.crt files",
                    tsa_line,
                )
            tsa_certificates = self.certificates(tsa_store, tsa_text, tsa_line)
            tsa_store = tsa_store.resolve()
        return NotationAuthority(
            name=name,
            trust_store=store.resolve(),
            certificates=certificates,
            trusted_identities=tuple(text for text, _ in identities),
            level=level,
            line=line,
            tsa_store=tsa_store,
            tsa_certificates=tsa_certificates,
            verify_timestamp=section.choice("verify-timestamp", VerifyTimestamp, VerifyTimestamp.ALWAYS),
            revocation=section.choice("revocation", Revocation, Revocation.CHECK),
        )

    def notation_identities(self, identities: list[tuple[str, int]]) -> None:
        """The Notary Project rules for trusted identities: C, ST and O present, escapes well
        formed, no attribute twice, and no two identities one certificate could both match."""
        from trust.notation import overlapping, parse_identity

        parsed: list[tuple[str, dict[str, str]]] = []
        for text, item_line in identities:
            if text == "*":
                continue
            try:
                attributes = parse_identity(text)
            except ValueError as exc:
                hint = "write e.g. 'x509.subject: C=US, ST=WA, O=acme'"
                raise self.fail(str(exc), hint, item_line) from None
            for other_text, other in parsed:
                if overlapping(attributes, other):
                    raise self.fail(
                        f"trusted identities {other_text!r} and {text!r} overlap: one certificate "
                        "could match both",
                        "keep the one you mean (Notation refuses overlapping identities)",
                        item_line,
                    )
            parsed.append((text, attributes))

    def certificates(self, store: Path, store_text: str, line: int) -> tuple[x509.Certificate, ...]:
        from cryptography import x509

        files = sorted(p for p in store.iterdir() if p.suffix.lower() in CERT_SUFFIXES and p.is_file())
        if not files:
            raise self.fail(
                f"trust store {store_text} holds no certificates",
                f"put the CA certificates there as {', '.join('*' + s for s in CERT_SUFFIXES)} files",
                line,
            )
        if len(files) > MAX_TRUST_STORE_FILES:
            raise self.fail(
                f"trust store {store_text} holds more than {MAX_TRUST_STORE_FILES} files",
                "keep only the CA certificates there",
                line,
            )
        result: list[x509.Certificate] = []
        read: dict[str, str | None] = {}
        for path in files:
            shown = f"{store_text}/{path.name}"
            try:
                with open_regular_file(path) as handle:
                    data = handle.read(MAX_CERT_FILE_BYTES + 1)
            except OSError as exc:
                raise self.fail(
                    f"cannot read certificate {shown}: {exc.strerror or exc}", "check its permissions", line
                ) from None
            if len(data) > MAX_CERT_FILE_BYTES:
                raise self.fail(
                    f"certificate file {shown} is larger than {MAX_CERT_FILE_BYTES} bytes",
                    "keep only CA certificates in the trust store",
                    line,
                )
            read[path.name] = digest_bytes(data)
            try:
                if b"-----BEGIN" in data:
                    result.extend(x509.load_pem_x509_certificates(data))
                else:
                    result.append(x509.load_der_x509_certificate(data))
            except ValueError:
                raise self.fail(
                    f"{shown} in the trust store is not an X.509 certificate",
                    "keep only PEM or DER certificates there",
                    line,
                ) from None
        # The folder as `policy.reuse` fingerprints it: every file, the certificates as read here.
        self.inputs.append((store, folder_fingerprint(store, read)))
        return tuple(result)

    # -- rules --

    def rules(self, top: _Section, authorities: dict[str, Authority]) -> list[Rule]:
        if not top.has("rules"):
            return []
        node: _Seq = top._typed(
            "rules", _Seq, "rules: [{scope: registry.example.com/team, signed-by: [release]}]"
        )
        rules: list[Rule] = []
        seen: dict[str, Rule] = {}
        for number, (item, line) in enumerate(zip(node.items, node.item_lines, strict=True), start=1):
            if not isinstance(item, _Map):
                raise self.fail(
                    f"rule {number} must be a mapping, not {_describe_type(item)}",
                    "write '- scope: …' followed by 'signed-by', 'reject' or 'insecure-accept-anything'",
                    line,
                )
            rule = self.rule(item, number, authorities)
            assert rule.scope is not None
            earlier = seen.get(rule.scope.canonical)
            if earlier is not None:
                raise self.fail(
                    f"rule {number} has the same scope as rule {earlier.number} (line {earlier.line}): "
                    f"{rule.scope.canonical}",
                    "merge them into one rule",
                    item.key_lines.get("scope", item.line),
                )
            seen[rule.scope.canonical] = rule
            rules.append(rule)
        return rules

    def rule(self, node: _Map, number: int | None, authorities: dict[str, Authority]) -> Rule:
        what = f"rule {number}" if number is not None else "the default rule"
        known = RULE_FIELDS if number is not None else DEFAULT_FIELDS
        hints = {"scope": "the default applies to images that no rule matches: remove 'scope'"}
        section = _Section(self, node, what, known, hints if number is None else None)
        scope = None
        if number is not None:
            scope_text = section.string("scope", "scope: registry.example.com/team/*")
            if scope_text is None:
                raise section.error(
                    None, f"{what} has no 'scope'", "add e.g. 'scope: registry.example.com/team'"
                )
            try:
                scope = parse_scope(scope_text)
            except PolicyError as exc:
                raise exc.at(self.source, section.line("scope")) from None

        present = [kind for kind, key in _KIND_FIELDS.items() if section.has(key)]
        if len(present) > 1:
            first, second = (_KIND_FIELDS[k] for k in present[:2])
            raise section.error(
                second,
                f"{what} has both {first!r} and {second!r}",
                "keep one: a rule requires signatures (signed-by), rejects (reject: true) "
                "or accepts anything (insecure-accept-anything: true)",
            )
        if not present:
            raise section.error(
                None,
                f"{what} says neither 'signed-by', 'reject' nor 'insecure-accept-anything'",
                "add one, e.g. 'signed-by: [release]' or 'reject: true'",
            )
        kind = present[0]
        for key in node.values:
            if key not in _FIELDS_FOR_KIND[kind]:
                raise section.error(
                    key, f"{key!r} has no effect in {what}, which says {_KIND_FIELDS[kind]!r}", "remove it"
                )
        if kind is not RuleKind.SIGNED:
            key = _KIND_FIELDS[kind]
            if section.boolean(key, True) is not True:
                raise section.error(
                    key,
                    f"'{key}: false' in {what} does not say what to do",
                    f"write '{key}: true', or 'signed-by: [AUTHORITY]' to require signatures",
                )
            return Rule(
                scope=scope,
                kind=kind,
                mode=section.choice("mode", Mode, Mode.ENFORCE),
                require_digest=section.boolean("require-digest", True),
                limits=self.limits(section),
                runtime=self.runtime(section),
                line=node.line,
                number=number,
            )

        chosen = self.signed_by(section, authorities)
        threshold = section.integer("threshold", 1, "threshold: 2")
        if not 1 <= threshold <= len(chosen):
            raise section.error(
                "threshold",
                f"threshold {threshold} in {what} is out of range for {len(chosen)} "
                f"authorit{'ies' if len(chosen) != 1 else 'y'} in 'signed-by'",
                f"write a number from 1 to {len(chosen)}"
                if len(chosen) > 1
                else "write 'threshold: 1' or leave it out",
            )
        return Rule(
            scope=scope,
            kind=kind,
            authorities=tuple(chosen),
            threshold=threshold,
            mode=section.choice("mode", Mode, Mode.ENFORCE),
            require_digest=section.boolean("require-digest", True),
            sign_target=section.choice("sign-target", SignTarget, SignTarget.MANIFEST),
            ignore_reference=section.boolean("ignore-reference", False),
            attestations=self.attestations(section, authorities),
            limits=self.limits(section),
            runtime=self.runtime(section),
            line=node.line,
            number=number,
        )

    def limits(self, rule: _Section) -> ImageLimits:
        """`limits: {max-layers: 200, max-unpacked-bytes: 107374182400, max-files: 5000000}`."""
        node = rule.mapping("limits", "limits: {max-layers: 200}")
        if node is None:
            return ImageLimits()
        section = _Section(self, node, f"'limits' of {rule.what}", tuple(LIMIT_FIELDS))
        values: dict[str, int] = {}
        for key, attribute in LIMIT_FIELDS.items():
            value = section.integer(key, getattr(ImageLimits, attribute), f"{key}: 1000")
            if not 1 <= value <= _MAX_LIMIT:
                raise section.error(
                    key,
                    f"{key} in {section.what} must be a positive integer up to {_MAX_LIMIT}",
                    f"write e.g. '{key}: {getattr(ImageLimits, attribute)}' (the default)",
                )
            values[attribute] = value
        return ImageLimits(**values)

    def runtime(self, rule: _Section) -> RuntimePermissions:
        """`runtime: {allow-privileged: true}`: what containers of the images this rule admits may
        ask for beyond the defaults (nothing, when absent)."""
        node = rule.mapping("runtime", "runtime: {allow-privileged: true}")
        if node is None:
            return RuntimePermissions()
        section = _Section(self, node, f"'runtime' of {rule.what}", tuple(RUNTIME_FIELDS))
        return RuntimePermissions(
            **{attribute: section.boolean(key, False) for key, attribute in RUNTIME_FIELDS.items()}
        )

    def attestations(
        self, section: _Section, authorities: dict[str, Authority]
    ) -> tuple[AttestationRequirement, ...]:
        """A signed rule's `attestations:` list (see docs/attestations.md)."""
        if not section.has("attestations"):
            return ()
        from policy.conditions import ConditionError, compile_condition
        from trust.attest import SIGNING_KINDS, predicate_type_for

        example = "attestations: [{name: sbom, predicate-type: spdx, signed-by: [release]}]"
        items: _Seq = section._typed("attestations", _Seq, example)
        required: list[AttestationRequirement] = []
        for position, (item, line) in enumerate(zip(items.items, items.item_lines, strict=True), 1):
            if not isinstance(item, _Map):
                raise self.fail(
                    f"item {position} of 'attestations' in {section.what} is {_describe_type(item)}",
                    f"write e.g. '{example}'",
                    line,
                )
            what = f"attestation {position} of {section.what}"
            entry = _Section(self, item, what, ATTESTATION_FIELDS)
            name = entry.string("name", "name: built-by-ci") or f"attestation-{position}"
            if any(r.name == name for r in required):
                raise entry.error(
                    "name", f"two attestations of {section.what} are named {name!r}", "rename one"
                )
            type_text = entry.string("predicate-type", "predicate-type: https://slsa.dev/provenance/v1")
            if type_text is None:
                raise entry.error(
                    None,
                    f"{what} has no 'predicate-type'",
                    "add e.g. 'predicate-type: slsaprovenance1' or a URI",
                )
            try:
                predicate_type = predicate_type_for(type_text)
            except ValueError as exc:
                raise entry.error("predicate-type", str(exc), "write a URI or a cosign --type name") from None
            if not entry.has("signed-by"):
                raise entry.error(None, f"{what} has no 'signed-by'", "add e.g. 'signed-by: [release]'")
            signers = self.signed_by(entry, authorities)
            for authority in signers:
                if authority.kind not in SIGNING_KINDS:
                    raise entry.error(
                        "signed-by",
                        f"authority {authority.name!r} ({authority.kind}) cannot sign attestations in {what}",
                        "name a cosign-keys or keyless authority",
                    )
            condition = None
            text = entry.string("condition", "condition: 'predicate.builder.id == \"…\"'")
            if text is not None:
                try:
                    condition = compile_condition(text)
                except ConditionError as exc:
                    raise entry.error(
                        "condition",
                        f"the condition of {what} does not compile: {exc}",
                        (
                            "CEL over predicate, statement and subject, e.g. "
                            "'predicate.buildDefinition.buildType == \"…\"'"
                        ),
                    ) from None
            required.append(AttestationRequirement(name, predicate_type, tuple(signers), condition, line))
        if not required:
            raise section.error("attestations", f"'attestations' in {section.what} is empty", "remove it")
        return tuple(required)

    def signed_by(self, section: _Section, authorities: dict[str, Authority]) -> list[Authority]:
        names = section.strings("signed-by", "signed-by: [release, ci]", "authority name")
        chosen: list[Authority] = []
        owners: dict[str, str] = {}
        for name, line in names:
            authority = authorities.get(name)
            if authority is None:
                hint = (
                    _suggestion(name, list(authorities)) if authorities else "define it under 'authorities:'"
                )
                raise self.fail(
                    f"{section.what} names authority {name!r}, which is not defined under 'authorities'",
                    hint,
                    line,
                )
            if any(a.name == name for a in chosen):
                raise self.fail(
                    f"authority {name!r} is listed twice in 'signed-by' of {section.what}",
                    "list it once",
                    line,
                )
            # One signer must never count twice towards a threshold.
            if isinstance(authority, CosignKeyAuthority):
                for key in authority.keys:
                    other = owners.get(key.fingerprint)
                    if other is not None:
                        raise self.fail(
                            f"authorities {other!r} and {name!r} in {section.what} share the key "
                            f"sha256:{key.fingerprint[:12]}, so one signer would count twice",
                            "give each authority its own keys",
                            line,
                        )
                    owners[key.fingerprint] = name
            chosen.append(authority)
        return chosen
