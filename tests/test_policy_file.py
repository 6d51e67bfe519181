"""The policy file: loading, load-time errors, scopes and precedence, the schema (policy/)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from policy import loader
from policy.errors import PolicyError
from policy.loader import load_policy, load_policy_text
from policy.model import (
    CosignKeyAuthority,
    KeylessAuthority,
    Mode,
    NotationAuthority,
    NotationLevel,
    Policy,
    RuleKind,
    SignTarget,
    describe,
)
from policy.scope import parse_scope
from pull.errors import UsageError
from pull.reference import Reference
from trust.keys.keyfiles import TrustedKey

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "policies"
VALID = sorted((DATA / "valid").glob("*.yaml"))
INVALID = sorted((DATA / "invalid").glob("*.yaml"))


NOTATION_STORE = (
    "version: 1\nauthorities:\n  n:\n    notation:\n"
    "      trust-store: store\n      trusted-identities: ['*']\n"
)


def load_text(text: str, base_dir: Path = DATA / "valid") -> Policy:
    return load_policy_text(text, base_dir, "test.yaml")


def rule_scope(policy: Policy, reference: str) -> str | None:
    return policy.rule_for(Reference.parse(reference)).scope


# --- policies that must load --------------------------------------------------------------------


def test_fixture_folders_are_populated() -> None:
    assert len(VALID) >= 5
    assert len(INVALID) >= 60


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_policy_loads(path: Path) -> None:
    policy = load_policy(path)
    assert policy.source_path == path
    assert policy.default.scope is None
    summary = describe(policy)
    assert summary[0].startswith(f"{path}: version 1")
    assert any(line.startswith("default (line ") for line in summary)


def test_full_policy_model() -> None:
    policy = load_policy(DATA / "valid" / "full.yaml")
    assert list(policy.authorities) == ["release", "ci", "github", "corp-notary"]

    release = policy.authorities["release"]
    assert isinstance(release, CosignKeyAuthority)
    assert [k.name for k in release.keys] == ["release:../keys/release.pub"]
    assert release.keys[0].fingerprint == TrustedKey.from_file(DATA / "keys" / "release.pub").fingerprint
    assert [k.name for k in release.rekor_keys] == ["release:../keys/rekor.pub"]

    github = policy.authorities["github"]
    assert isinstance(github, KeylessAuthority)
    assert github.issuer == "https://token.actions.githubusercontent.com"
    assert github.issuer_regexp is None and github.subject is None
    assert github.subject_regexp is not None
    assert github.trusted_root == (DATA / "roots" / "trusted_root.json").resolve()

    notary = policy.authorities["corp-notary"]
    assert isinstance(notary, NotationAuthority)
    assert notary.trust_store == (DATA / "truststore" / "x509" / "ca" / "corp").resolve()
    assert len(notary.certificates) == 1
    assert "O=acme" in notary.certificates[0].subject.rfc4514_string()
    assert notary.trusted_identities == ("x509.subject: C=US, ST=WA, O=acme",)
    assert notary.level is NotationLevel.STRICT

    team, app, wildcard, scratch = policy.rules
    assert team.kind is RuleKind.SIGNED
    assert [a.name for a in team.authorities] == ["release", "ci"]
    assert team.authorities[0] is release
    assert (team.threshold, team.mode, team.require_digest) == (2, Mode.ENFORCE, True)
    assert (team.sign_target, team.ignore_reference, team.line, team.number) == (
        SignTarget.MANIFEST,
        False,
        20,
        1,
    )
    assert app.threshold == 1  # the default
    assert app.sign_target is SignTarget.BOTH
    assert wildcard.kind is RuleKind.REJECT and wildcard.authorities == ()
    assert scratch.kind is RuleKind.ACCEPT_ANYTHING
    assert policy.default.kind is RuleKind.REJECT and policy.default.line == 34


def test_defaults_of_a_signed_rule() -> None:
    policy = load_text(
        "version: 1\nauthorities: {ci: {cosign-keys: [../keys/ci.pub]}}\ndefault: {signed-by: [ci]}\n"
    )
    rule = policy.default
    assert (rule.kind, rule.threshold, rule.mode, rule.require_digest) == (
        RuleKind.SIGNED,
        1,
        Mode.ENFORCE,
        True,
    )
    assert (rule.sign_target, rule.ignore_reference, rule.number) == (SignTarget.MANIFEST, False, None)


def test_audit_threshold_policy() -> None:
    policy = load_policy(DATA / "valid" / "audit-threshold.yaml")
    prod, mirror = policy.rules
    assert [a.name for a in prod.authorities] == ["release", "ci", "audit"]
    assert (prod.threshold, prod.mode, prod.sign_target) == (2, Mode.AUDIT, SignTarget.INDEX)
    assert prod.require_digest is False and prod.ignore_reference is True
    assert mirror.kind is RuleKind.REJECT and mirror.mode is Mode.AUDIT


def test_inline_pem_keys_equal_the_key_files() -> None:
    policy = load_policy(DATA / "valid" / "inline-pem.yaml")
    authority = policy.authorities["release"]
    assert isinstance(authority, CosignKeyAuthority)
    assert authority.keys[0].name == "release:cosign-key-pems[1]"
    assert authority.keys[0].fingerprint == TrustedKey.from_file(DATA / "keys" / "release.pub").fingerprint
    assert (
        authority.rekor_keys[0].fingerprint == TrustedKey.from_file(DATA / "keys" / "rekor.pub").fingerprint
    )


def test_absolute_key_paths_and_base_dir(tmp_path: Path) -> None:
    key = (DATA / "keys" / "ci.pub").resolve()
    policy = load_text(
        f"version: 1\nauthorities: {{ci: {{cosign-keys: [{json.dumps(str(key))}]}}}}\n"
        "default: {signed-by: [ci]}\n",
        base_dir=tmp_path,
    )
    assert policy.default.authorities[0].name == "ci"
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "mine.pub").write_bytes(key.read_bytes())
    relative = load_text(
        "version: 1\nauthorities: {ci: {cosign-keys: [keys/mine.pub]}}\ndefault: {signed-by: [ci]}\n",
        tmp_path,
    )
    assert isinstance(relative.authorities["ci"], CosignKeyAuthority)


def test_keyless_regexps_must_match_the_whole_value() -> None:
    policy = load_text(
        "version: 1\nauthorities:\n  gh:\n    keyless:\n"
        "      issuer-regexp: https://token\\.actions\\.githubusercontent\\.com\n"
        "      subject-regexp: https://github\\.com/acme/.*\n"
        "default: {signed-by: [gh]}\n"
    )
    gh = policy.authorities["gh"]
    assert isinstance(gh, KeylessAuthority)
    assert gh.issuer_matches("https://token.actions.githubusercontent.com")
    assert not gh.issuer_matches("https://token.actions.githubusercontent.com.evil.example")
    assert gh.subject_matches("https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main")
    assert not gh.subject_matches("https://github.com/acme-evil/app")
    assert not gh.subject_matches("x https://github.com/acme/app")
    assert not gh.subject_matches("https://github.com/acme/app\nhttps://evil")


def test_exact_keyless_identity() -> None:
    policy = load_text(
        "version: 1\nauthorities:\n  me:\n"
        "    keyless: {issuer: https://accounts.google.com, subject: me@example.com}\n"
        "default: {signed-by: [me]}\n"
    )
    me = policy.authorities["me"]
    assert isinstance(me, KeylessAuthority)
    assert me.subject_matches("me@example.com") and not me.subject_matches("me@example.com.evil")
    assert me.trusted_root is None


def test_describe_summarises_for_humans() -> None:
    policy = load_policy(DATA / "valid" / "full.yaml")
    text = "\n".join(describe(policy))
    assert (
        "rule 1 registry.example.com/team/* (line 20): at least 2 of release, ci must sign the manifest"
        in text
    )
    assert "Rekor SET required" in text
    assert "rule 4 127.0.0.1:5000/scratch (line 32): INSECURE: accepts any image" in text
    assert "default (line 34): reject" in text
    assert "warning:" not in text  # every authority is used

    unused = load_text(
        "version: 1\nauthorities: {ci: {cosign-keys: [../keys/ci.pub]}}\ndefault: {reject: true}\n"
    )
    assert describe(unused)[-1] == "warning: authority ci is not used by any rule"
    assert not [line for line in describe(unused) if "reuse" in line]  # off unless the policy says so
    reused = load_text("version: 1\nreuse-decisions: 10m\ndefault: {reject: true}\n")
    assert "reuse-decisions: trust run may reuse a passing decision for 600 s" in describe(reused)[1]


# --- policies that must fail ----------------------------------------------------------------------


def _expectation(path: Path) -> tuple[str, int]:
    expect, line = path.read_text().splitlines()[:2]
    assert expect.startswith("# expect: ") and line.startswith("# line: "), path
    return expect.removeprefix("# expect: "), int(line.removeprefix("# line: "))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_policy_is_refused(path: Path) -> None:
    fragment, line = _expectation(path)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert isinstance(caught.value, UsageError)  # exit 2
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert "\n" not in message
    assert caught.value.line == line and caught.value.source == str(path)


def test_missing_key_file_names_the_policy_folder(tmp_path: Path) -> None:
    text = "version: 1\nauthorities:\n  release: {cosign-keys: [keys/release.pub]}\ndefault: {reject: true}\n"
    with pytest.raises(PolicyError) as caught:
        load_text(text, tmp_path)
    assert str(caught.value) == (
        f"test.yaml:3: key file keys/release.pub not found (relative to the policy's folder "
        f"{tmp_path.resolve()}); write the path of a PEM public key, relative to the policy's folder "
        "or absolute"
    )


def test_missing_absolute_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pub"
    text = f"version: 1\nauthorities:\n  release: {{cosign-keys: [{missing}]}}\ndefault: {{reject: true}}\n"
    with pytest.raises(PolicyError, match=rf"^test\.yaml:3: key file {re.escape(str(missing))} not found; "):
        load_text(text, tmp_path)


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["version: 1", "l0: &l0 [" + ", ".join(["lol"] * 50) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 50) + "]" for i in range(1, 30)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\ndefault: {reject: true}\n")
    started = time.monotonic()
    with pytest.raises(PolicyError, match="anchors and aliases"):
        load_policy(path)
    assert time.monotonic() - started < 1.0


def test_alias_without_anchor_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"^test\.yaml:2: YAML anchors and aliases"):
        load_text("version: 1\ndefault: *nothing\n")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\ndefault: {reject: true}\n" + "#" * loader.MAX_POLICY_BYTES)
    with pytest.raises(PolicyError, match="larger than 1048576 bytes"):
        load_policy(path)
    with pytest.raises(PolicyError, match="larger than 1048576 bytes"):
        load_text(path.read_text())


def test_deep_nesting_is_refused() -> None:
    text = "version: 1\ndefault: {reject: true}\nrules: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(PolicyError, match=r"^test\.yaml:3: the document is nested more than 16 levels"):
        load_text(text)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.yaml")
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"version: 1\n# caf\xe9\ndefault: {reject: true}\n")
    with pytest.raises(PolicyError, match=r"not UTF-8 text \(byte 16\)"):
        load_policy(binary)


def test_trust_store_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = NOTATION_STORE
    with pytest.raises(
        PolicyError, match=r"^test\.yaml:5: store/ca\.crt in the trust store is not an X\.509"
    ):
        load_text(text + "default: {reject: true}\n", tmp_path)


def test_trust_store_accepts_der_and_pem_bundles(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = (DATA / "truststore" / "x509" / "ca" / "corp" / "acme-ca.crt").read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    store = tmp_path / "store"
    store.mkdir()
    (store / "one.cer").write_bytes(certificate.public_bytes(Encoding.DER))
    (store / "two.pem").write_bytes(pem + pem)
    (store / "notes.txt").write_text("ignored: not a certificate suffix")
    text = NOTATION_STORE
    policy = load_text(text + "      level: audit\ndefault: {signed-by: [n]}\n", tmp_path)
    authority = policy.authorities["n"]
    assert isinstance(authority, NotationAuthority)
    assert authority.certificates == (certificate, certificate, certificate)
    assert authority.level is NotationLevel.AUDIT


# --- scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("library/busybox", "docker.io/library/busybox"),
        ("acme/app", "docker.io/acme/app"),
        ("docker.io/busybox", "docker.io/library/busybox"),
        ("index.docker.io/acme/app", "docker.io/acme/app"),
        ("docker.io", "docker.io"),
        ("docker.io/*", "docker.io/library/*"),
        ("Registry.Example.COM/team", "registry.example.com/team"),
        ("registry.example.com", "registry.example.com"),
        ("localhost", "localhost"),
        ("localhost:05000/x", "localhost:5000/x"),
        ("127.0.0.1:*/demo/*", "127.0.0.1:*/demo/*"),
        ("[::1]:5000/a", "[::1]:5000/a"),
        ("*.example.com", "*.example.com"),
        ("*.example.com:*/team/app", "*.example.com:*/team/app"),
        ("host.example.com:5000", "host.example.com:5000"),
    ],
)
def test_scope_normalisation(text: str, canonical: str) -> None:
    assert parse_scope(text).canonical == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("registry.example.com/team:v1", "names a tag ('v1')"),
        ("busybox:latest", "names a tag ('latest')"),
        ("docker.io/library/busybox@sha256:" + "0" * 64, "names a digest"),
        ("registry.example.com/**", "'**'"),
        ("registry.example.com/a*b", "inside the path component 'a*b'"),
        ("*example.com", "inside the registry host"),
        ("a.*.example.com", "inside the registry host"),
        ("*.*.example.com", "inside the registry host"),
        ("*:5000", "matches every registry"),
        ("*", "would match every image"),
        ("registry.example.com/team/", "empty path component"),
        ("registry.example.com:0/x", "bad port '0'"),
        ("registry.example.com:http/x", "bad port 'http'"),
        ("bad_host.example.com/x", "bad registry host"),
        ("registry.example.com/-x", "bad repository path '-x'"),
        (" registry.example.com", "empty or contains spaces"),
        ("", "empty or contains spaces"),
    ],
)
def test_scope_grammar_refusals(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_scope(text)
    assert fragment in str(caught.value)
    assert caught.value.hint  # every refusal says what to write instead
    assert caught.value.line is None  # the loader adds the location


@pytest.mark.parametrize(
    ("scope", "reference", "matches"),
    [
        ("registry.example.com/team", "registry.example.com/team/app", True),
        ("registry.example.com/team", "registry.example.com/team/x/y", True),
        ("registry.example.com/team", "registry.example.com/team", True),
        ("registry.example.com/team", "registry.example.com/teamster", False),
        ("registry.example.com/team", "registry.example.com/teamster/app", False),
        ("registry.example.com/team/*", "registry.example.com/team", False),
        ("registry.example.com/team/*", "registry.example.com/team/app", True),
        ("registry.example.com/team/*", "registry.example.com/team/app/sub", True),
        ("registry.example.com", "registry.example.com:5000/app", False),
        ("registry.example.com:5000", "registry.example.com/app", False),
        ("registry.example.com:5000", "registry.example.com:5000/app", True),
        ("registry.example.com:*", "registry.example.com:5000/app", True),
        ("registry.example.com:*", "registry.example.com/app", True),
        ("*.example.com", "registry.example.com/app", True),
        ("*.example.com", "a.b.example.com/app", True),
        ("*.example.com", "example.com/app", False),
        ("*.example.com", "registry.notexample.com/app", False),
        ("*.example.com", "registry.example.com:443/app", False),
        ("*.example.com:*", "registry.example.com:443/app", True),
        ("*.example.com/team/app", "mirror.example.com/team/app", True),
        ("*.example.com/team/app", "mirror.example.com/team/web", False),
        ("[::1]:*/demo", "[::1]:5000/demo/x", True),
        ("[::1]:*/demo", "127.0.0.1:5000/demo/x", False),
        ("busybox", "busybox:1.36", True),
        ("busybox", "docker.io/library/busybox@sha256:" + "a" * 64, True),
        ("busybox", "acme/busybox", False),
        ("registry.example.com/team", "REGISTRY.example.com/team/app", True),
    ],
)
def test_scope_matching(scope: str, reference: str, matches: bool) -> None:
    assert parse_scope(scope).matches(Reference.parse(reference)) is matches


PRECEDENCE = """
version: 1
rules:
  - {scope: registry.example.com, reject: true}
  - {scope: registry.example.com/team, reject: true}
  - {scope: registry.example.com/team/*, reject: true}
  - {scope: registry.example.com/team/app, reject: true}
  - {scope: registry.example.com/*/app, reject: true}
  - {scope: "*.example.com", reject: true}
  - {scope: "*.prod.example.com", reject: true}
  - {scope: "*.example.com/team/app", reject: true}
  - {scope: "registry.example.com:5000", reject: true}
  - {scope: "registry.example.com:*", reject: true}
  - {scope: busybox, reject: true}
  - {scope: docker.io, reject: true}
default: {reject: true}
"""


@pytest.mark.parametrize(
    ("reference", "winner"),
    [
        # 1. exact repository beats everything
        ("registry.example.com/team/app", "registry.example.com/team/app"),
        ("registry.example.com/team", "registry.example.com/team"),
        ("busybox", "busybox"),
        ("index.docker.io/library/busybox:1.36", "busybox"),
        # 2. more path components
        ("registry.example.com/team/web", "registry.example.com/team/*"),
        ("registry.example.com/other/app", "registry.example.com/*/app"),
        ("registry.example.com/teamster", "registry.example.com"),
        ("registry.example.com/teamster/app", "registry.example.com/*/app"),
        ("mirror.example.com/team/app", "*.example.com/team/app"),
        ("docker.io/library/alpine", "docker.io"),
        # 3. fewer wildcards
        ("registry.example.com/team/app/debug", "registry.example.com/team/app"),
        ("registry.example.com/x", "registry.example.com"),
        ("registry.example.com:5000/team/app", "registry.example.com:5000"),
        ("registry.example.com:6000/x", "registry.example.com:*"),
        # 4. more literal host labels
        ("a.prod.example.com/x", "*.prod.example.com"),
        ("mirror.example.com/x", "*.example.com"),
        # no match: the default
        ("example.com/x", None),
        ("mirror.example.com:5000/x", None),
        ("quay.io/acme/app", None),
    ],
)
def test_most_specific_rule_wins(reference: str, winner: str | None) -> None:
    policy = load_text(PRECEDENCE)
    matched = policy.rule_for(Reference.parse(reference))
    assert matched.scope == winner
    if winner is None:
        assert matched.is_default and matched.index is None and matched.rule is policy.default
    else:
        assert matched.index is not None and policy.rules[matched.index] is matched.rule
        assert matched.rule.number == matched.index + 1


def test_ties_are_broken_by_file_order() -> None:
    first, second = (
        "{scope: registry.example.com/*/app, reject: true}",
        "{scope: registry.example.com/team/*, reject: true}",
    )
    for a, b in ((first, second), (second, first)):
        policy = load_text(f"version: 1\nrules:\n  - {a}\n  - {b}\ndefault: {{reject: true}}\n")
        matched = policy.rule_for(Reference.parse("registry.example.com/team/app"))
        assert matched.index == 0
        assert str(matched).startswith("rule 1 (line 3, scope ")


def test_example_policy_admits_signed_demo_images_only() -> None:
    policy = load_policy(REPO / "keys-example" / "policy.yaml")
    example = policy.authorities["example"]
    assert isinstance(example, CosignKeyAuthority)
    assert (
        example.keys[0].fingerprint == TrustedKey.from_file(REPO / "keys-example" / "cosign.pub").fingerprint
    )
    for reference in ("127.0.0.1:41234/demo/hello@sha256:" + "b" * 64, "127.0.0.1:5000/demo/unsigned"):
        rule = policy.rule_for(Reference.parse(reference)).rule
        assert rule.kind is RuleKind.SIGNED and rule.authorities == (example,)
        assert rule.require_digest is True
    for reference in ("docker.io/library/busybox", "127.0.0.1:5000/other/hello", "10.0.0.1:5000/demo/hello"):
        assert policy.rule_for(Reference.parse(reference)).is_default
    assert policy.default.kind is RuleKind.REJECT


# --- the JSON Schema ---------------------------------------------------------------------------


def _schema() -> dict[str, object]:
    schema: dict[str, object] = json.loads((REPO / "policy" / "schema.json").read_text())
    return schema


def _properties(node: object) -> set[str]:
    assert isinstance(node, dict)
    properties = node["properties"]
    assert isinstance(properties, dict)
    return set(properties)


def test_schema_names_exactly_the_loaders_fields() -> None:
    schema = _schema()
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _properties(schema) == set(loader.TOP_FIELDS)
    assert _properties(defs["authority"]) == set(loader.AUTHORITY_FIELDS)
    assert _properties(defs["keyless"]) == set(loader.KEYLESS_FIELDS)
    assert _properties(defs["notation"]) == set(loader.NOTATION_FIELDS)
    assert _properties(defs["rule"]) == set(loader.RULE_FIELDS)
    assert _properties(defs["default"]) == set(loader.DEFAULT_FIELDS)
    assert _properties(defs["ruleBody"]) == set(loader.DEFAULT_FIELDS)


def test_schema_enums_match_the_model() -> None:
    defs = _schema()["$defs"]
    assert isinstance(defs, dict)
    body = defs["ruleBody"]["properties"]
    assert body["mode"]["enum"] == [m.value for m in Mode]
    assert body["sign-target"]["enum"] == [t.value for t in SignTarget]
    assert defs["notation"]["properties"]["level"]["enum"] == [level.value for level in NotationLevel]
    assert defs["authority"]["properties"]["cosign-keys"]["$ref"] == "#/$defs/pathList"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_validate_against_the_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.Draft202012Validator(_schema()).validate(yaml.safe_load(path.read_text()))
