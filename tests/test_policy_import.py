"""`trust policy import`: containers-policy.json to a policy file (policy/importer.py)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.vectors import VECTORS as SHARED_VECTORS

from policy.errors import PolicyError
from policy.importer import ImportResult, import_containers_policy
from policy.loader import load_policy, load_policy_text
from policy.model import CosignKeyAuthority, Policy, RuleKind
from pull.reference import Reference
from trust.keys.keyfiles import TrustedKey

VECTOR = SHARED_VECTORS / "cosign-containers-image" / "policy.json"
KEYS = Path(__file__).resolve().parent / "data" / "policies" / "keys"


def fingerprint(name: str) -> str:
    return TrustedKey.from_file(KEYS / f"{name}.pub").fingerprint


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with the test keys under keys/, where the containers policy is written."""
    shutil.copytree(KEYS, tmp_path / "keys")
    return tmp_path


def convert(folder: Path, docker: dict[str, Any], **top: Any) -> tuple[ImportResult, Policy]:
    document: dict[str, Any] = {"default": [{"type": "reject"}], "transports": {"docker": docker}}
    document.update(top)
    path = folder / "policy.json"
    path.write_text(json.dumps(document, indent=2))
    result = import_containers_policy(path)
    # What `trust policy import > p.yaml` prints must load, wherever p.yaml is saved.
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "policy.yaml").write_text(result.yaml_text)
    return result, load_policy(elsewhere / "policy.yaml")


def rule(policy: Policy, reference: str) -> Any:
    return policy.rule_for(Reference.parse(reference)).rule


# --- the upstream example -----------------------------------------------------------------------


def test_vector_policy_converts_and_fails_closed() -> None:
    result = import_containers_policy(VECTOR)
    policy = load_policy_text(result.yaml_text, VECTOR.parent, "converted.yaml")

    playground = rule(policy, "example.com/playground/app")
    assert playground.kind is RuleKind.ACCEPT_ANYTHING
    # Everything else in the file needs GPG, signedBaseLayer or unusable keys: refused, not weakened.
    for reference in (
        "example.com/production/app",
        "example.com/hardened",
        "example.com/hardened-x509/x",
        "registry.access.redhat.com/ubi9",
        "registry.redhat.io/beta/x",
        "private-mirror:5000/vendor-mirror/product",
        "docker.io/bogus/key-data-example",
        "example.com/sigstore/key-data-example",
        "example.com/sigstore/key-path-example",
    ):
        matched = policy.rule_for(Reference.parse(reference))
        assert not matched.is_default, reference
        assert matched.rule.kind is RuleKind.REJECT, reference
    # containers/image ignores the port when matching `*.` scopes; the import keeps that meaning.
    assert policy.rule_for(Reference.parse("cdn.redhat.com:8443/x")).scope == "*.redhat.com:*"
    assert policy.rule_for(Reference.parse("a.access.redhat.com/x")).scope == "*.access.redhat.com:*"
    assert policy.rule_for(Reference.parse("quay.io/x")).is_default
    assert policy.default.kind is RuleKind.REJECT
    assert policy.authorities == {}

    warnings = result.warnings
    assert "transport 'dir': not converted; trust pulls only from registries ('docker' transport)" in warnings
    assert (
        "docker scope 'example.com/production': signedBy (GPGKeys) requirement not converted: "
        "GPG signatures are not supported; the scope is rejected"
    ) in warnings
    assert any(w.startswith("docker scope 'example.com/hardened': signedBaseLayer") for w in warnings)
    assert any(
        w.startswith("docker scope 'example.com/hardened-x509': signedBy (X509Certificates)")
        and "X.509 simple signing is not supported" in w
        for w in warnings
    )
    assert any(
        w.startswith("docker scope 'example.com/sigstore/key-data-example': keyData is not") for w in warnings
    )
    assert any(
        w.startswith("docker scope 'example.com/sigstore/key-path-example': keyPath /keys/public-key")
        for w in warnings
    )
    assert len(warnings) == 17
    for warning in warnings:
        assert "\n" not in warning
        assert warning.startswith(("docker scope '", "transport '")), warning


# --- hand-written policies ----------------------------------------------------------------------


def test_key_path_relative_to_the_json_becomes_absolute(folder: Path) -> None:
    result, policy = convert(
        folder, {"registry.example.com/team": [{"type": "sigstoreSigned", "keyPath": "keys/release.pub"}]}
    )
    assert result.warnings == []
    assert f'- "{(folder / "keys" / "release.pub").resolve()}"' in result.yaml_text
    team = rule(policy, "registry.example.com/team/app")
    assert team.kind is RuleKind.SIGNED and team.threshold == 1
    authority = team.authorities[0]
    assert isinstance(authority, CosignKeyAuthority)
    assert authority.name == "release"
    assert [k.fingerprint for k in authority.keys] == [fingerprint("release")]
    assert authority.rekor_keys == ()


def test_key_paths_make_one_authority_with_several_keys(folder: Path) -> None:
    _, policy = convert(
        folder,
        {
            "registry.example.com": [
                {"type": "sigstoreSigned", "keyPaths": ["keys/release.pub", "keys/ci.pub"]}
            ]
        },
    )
    team = rule(policy, "registry.example.com/app")
    assert len(team.authorities) == 1 and team.threshold == 1
    assert [k.fingerprint for k in team.authorities[0].keys] == [fingerprint("release"), fingerprint("ci")]


def test_key_data_is_pasted_in(folder: Path) -> None:
    data = base64.b64encode((KEYS / "ci.pub").read_bytes()).decode()
    result, policy = convert(folder, {"registry.example.com": [{"type": "sigstoreSigned", "keyData": data}]})
    assert result.warnings == []
    assert "cosign-key-pems:" in result.yaml_text and "-----BEGIN PUBLIC KEY-----" in result.yaml_text
    assert "keys/ci.pub" not in result.yaml_text  # self-contained
    authority = rule(policy, "registry.example.com/app").authorities[0]
    assert authority.name == "key-data"
    assert authority.keys[0].fingerprint == fingerprint("ci")


def test_key_datas_and_rekor_key_paths(folder: Path) -> None:
    datas = [base64.b64encode((KEYS / f"{name}.pub").read_bytes()).decode() for name in ("release", "ci")]
    result, policy = convert(
        folder,
        {
            "registry.example.com": [
                {"type": "sigstoreSigned", "keyDatas": datas, "rekorPublicKeyPaths": ["keys/rekor.pub"]}
            ]
        },
    )
    assert result.warnings == []
    authority = rule(policy, "registry.example.com/x").authorities[0]
    assert [k.fingerprint for k in authority.keys] == [fingerprint("release"), fingerprint("ci")]
    assert [k.fingerprint for k in authority.rekor_keys] == [fingerprint("rekor")]


def test_several_rekor_fields_are_not_guessed_between(folder: Path) -> None:
    requirement = {
        "type": "sigstoreSigned",
        "keyPath": "keys/release.pub",
        "rekorPublicKeyPath": "keys/rekor.pub",
        "rekorPublicKeyPaths": ["keys/rekor.pub"],
    }
    result, policy = convert(folder, {"registry.example.com": [requirement]})
    assert rule(policy, "registry.example.com/x").kind is RuleKind.REJECT
    assert "several Rekor key fields (rekorPublicKeyPath, rekorPublicKeyPaths)" in result.warnings[0]


def test_authorities_of_rejected_scopes_are_left_out(folder: Path) -> None:
    result, policy = convert(
        folder,
        {
            "a.example.com": [
                {"type": "sigstoreSigned", "keyPath": "keys/release.pub"},
                {"type": "signedBy"},
            ],
            "b.example.com": [{"type": "sigstoreSigned", "keyPath": "keys/ci.pub"}],
        },
    )
    assert list(policy.authorities) == ["ci"]
    assert "release.pub" not in result.yaml_text


def test_several_sigstore_requirements_become_a_threshold(folder: Path) -> None:
    result, policy = convert(
        folder,
        {
            "registry.example.com/prod": [
                {"type": "sigstoreSigned", "keyPath": "keys/release.pub"},
                {"type": "sigstoreSigned", "keyPath": "keys/ci.pub"},
                {"type": "insecureAcceptAnything"},
            ]
        },
    )
    assert result.warnings == []
    prod = rule(policy, "registry.example.com/prod/app")
    assert prod.kind is RuleKind.SIGNED
    assert [a.name for a in prod.authorities] == ["release", "ci"]
    assert prod.threshold == 2


def test_the_same_key_in_several_scopes_is_one_authority(folder: Path) -> None:
    requirement = [{"type": "sigstoreSigned", "keyPath": "keys/release.pub"}]
    same_file_other_spelling = [{"type": "sigstoreSigned", "keyPath": "./keys/../keys/release.pub"}]
    _, policy = convert(folder, {"a.example.com": requirement, "b.example.com": same_file_other_spelling})
    assert list(policy.authorities) == ["release"]
    assert rule(policy, "a.example.com/x").authorities == rule(policy, "b.example.com/x").authorities


def test_different_keys_with_the_same_file_name_get_distinct_names(folder: Path) -> None:
    (folder / "other").mkdir()
    shutil.copy(KEYS / "ci.pub", folder / "other" / "release.pub")
    _, policy = convert(
        folder,
        {
            "a.example.com": [{"type": "sigstoreSigned", "keyPath": "keys/release.pub"}],
            "b.example.com": [{"type": "sigstoreSigned", "keyPath": "other/release.pub"}],
        },
    )
    assert list(policy.authorities) == ["release", "release-2"]


def test_rekor_keys_are_required(folder: Path) -> None:
    rekor = base64.b64encode((KEYS / "rekor.pub").read_bytes()).decode()
    _, policy = convert(
        folder,
        {
            "a.example.com": [
                {
                    "type": "sigstoreSigned",
                    "keyPath": "keys/release.pub",
                    "rekorPublicKeyPath": "keys/rekor.pub",
                }
            ],
            "b.example.com": [
                {"type": "sigstoreSigned", "keyPath": "keys/release.pub", "rekorPublicKeyData": rekor}
            ],
        },
    )
    for reference in ("a.example.com/x", "b.example.com/x"):
        authority = rule(policy, reference).authorities[0]
        assert [k.fingerprint for k in authority.rekor_keys] == [fingerprint("rekor")]
    # Same signing key and same Rekor key: one authority, whichever way the files spelled them.
    assert len(policy.authorities) == 1


def test_reject_wins_over_everything_it_is_anded_with(folder: Path) -> None:
    result, policy = convert(
        folder,
        {
            "registry.example.com": [
                {"type": "sigstoreSigned", "keyPath": "keys/release.pub"},
                {"type": "reject"},
            ]
        },
        default=[{"type": "insecureAcceptAnything"}],
    )
    assert result.warnings == []
    assert rule(policy, "registry.example.com/x").kind is RuleKind.REJECT
    assert policy.default.kind is RuleKind.ACCEPT_ANYTHING


def test_docker_transport_default_overrides_the_global_default(folder: Path) -> None:
    result, policy = convert(
        folder, {"": [{"type": "sigstoreSigned", "keyPath": "keys/ci.pub"}]}, default=[{"type": "reject"}]
    )
    assert policy.default.kind is RuleKind.SIGNED
    assert policy.default.authorities[0].name == "ci"
    assert policy.rules == ()
    assert '# from transports.docker[""]' in result.yaml_text


@pytest.mark.parametrize(
    ("identity", "warning"),
    [
        ({"type": "matchRepository"}, None),
        ({"type": "matchRepoDigestOrExact"}, None),
        ({"type": "matchExact"}, "signedIdentity matchExact converted to trust's check"),
        (
            {"type": "remapIdentity", "prefix": "mirror.example.com", "signedPrefix": "vendor.example.com"},
            "signedIdentity 'remapIdentity' not converted: the rule requires the signature to name the "
            "image's own repository",
        ),
        ({"type": "exactRepository", "dockerRepository": "vendor.example.com/app"}, "'exactRepository'"),
        ({"type": "exactReference", "dockerReference": "vendor.example.com/app:1"}, "'exactReference'"),
    ],
)
def test_signed_identity(folder: Path, identity: dict[str, str], warning: str | None) -> None:
    requirement = {"type": "sigstoreSigned", "keyPath": "keys/release.pub", "signedIdentity": identity}
    result, policy = convert(folder, {"mirror.example.com": [requirement]})
    mirror = rule(policy, "mirror.example.com/app")
    # Kept as a signed rule with trust's strict same-repository check, never relaxed.
    assert mirror.kind is RuleKind.SIGNED and mirror.ignore_reference is False
    if warning is None:
        assert result.warnings == []
    else:
        assert len(result.warnings) == 1
        assert result.warnings[0].startswith("docker scope 'mirror.example.com': ")
        assert warning in result.warnings[0]


@pytest.mark.parametrize(
    ("requirement", "warning"),
    [
        (
            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/gpg"},
            "signedBy (GPGKeys) requirement not converted: GPG signatures are not supported",
        ),
        ({"type": "signedBaseLayer"}, "signedBaseLayer requirement not converted"),
        ({"type": "somethingNew"}, "requirement of unknown type 'somethingNew' not converted"),
        ("reject", "a requirement that is not a JSON object was not converted"),
        (
            {
                "type": "sigstoreSigned",
                "fulcio": {"caPath": "/ca.pem", "oidcIssuer": "https://x", "subjectEmail": "a@b"},
                "rekorPublicKeyPath": "keys/rekor.pub",
            },
            "sigstoreSigned with 'fulcio' (certificate-based) not converted: write a 'keyless' authority",
        ),
        (
            {"type": "sigstoreSigned", "keyPath": "keys/missing.pub"},
            "keyPath keys/missing.pub: cannot read key",
        ),
        ({"type": "sigstoreSigned", "keyPath": "keys/not-a-key.pub"}, "is not a PEM key file"),
        ({"type": "sigstoreSigned", "keyData": "not base64!"}, "keyData is not base64"),
        (
            {"type": "sigstoreSigned"},
            "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas",
        ),
        (
            {"type": "sigstoreSigned", "keyPath": "keys/ci.pub", "keyData": "eA=="},
            "(it has keyPath, keyData)",
        ),
        (
            {"type": "sigstoreSigned", "keyPath": "keys/ci.pub", "keyPathz": "x"},
            "field 'keyPathz' is unknown",
        ),
        (
            {"type": "sigstoreSigned", "keyPaths": []},
            "keyPaths must be a non-empty string or list of strings",
        ),
    ],
)
def test_unconvertible_requirements_reject_the_scope(folder: Path, requirement: Any, warning: str) -> None:
    good = {"type": "sigstoreSigned", "keyPath": "keys/release.pub"}
    result, policy = convert(folder, {"registry.example.com/app": [good, requirement]})
    assert rule(policy, "registry.example.com/app").kind is RuleKind.REJECT
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("docker scope 'registry.example.com/app': ")
    assert warning in result.warnings[0]
    assert result.warnings[0].endswith("; the scope is rejected")


def test_requirements_sharing_a_key_are_rejected(folder: Path) -> None:
    result, policy = convert(
        folder,
        {
            "registry.example.com": [
                {"type": "sigstoreSigned", "keyPath": "keys/release.pub"},
                {"type": "sigstoreSigned", "keyPaths": ["keys/release.pub", "keys/ci.pub"]},
            ]
        },
    )
    assert rule(policy, "registry.example.com/x").kind is RuleKind.REJECT
    assert result.warnings == [
        "docker scope 'registry.example.com': requirements 'release' and 'release-2' share a key, which a "
        "threshold of distinct signers cannot express; the scope is rejected"
    ]


def test_empty_requirement_list_is_rejected(folder: Path) -> None:
    result, policy = convert(folder, {"registry.example.com": []})
    assert rule(policy, "registry.example.com/x").kind is RuleKind.REJECT
    assert result.warnings == [
        "docker scope 'registry.example.com': the requirements are not a non-empty list; "
        "the scope is rejected"
    ]


def test_scopes_trust_cannot_express_are_left_out(folder: Path) -> None:
    accept = [{"type": "insecureAcceptAnything"}]
    result, policy = convert(
        folder,
        {
            "registry.example.com/app:v1": accept,
            "registry.example.com/app@sha256:" + "c" * 64: accept,
            "docker.io/library/busybox": accept,
            "busybox": [{"type": "reject"}],
        },
    )
    assert [r.scope.canonical for r in policy.rules if r.scope] == ["docker.io/library/busybox"]
    assert policy.rules[0].kind is RuleKind.ACCEPT_ANYTHING
    assert rule(policy, "registry.example.com/app:v1").kind is RuleKind.REJECT  # the default
    assert result.warnings == [
        "docker scope 'registry.example.com/app:v1': not converted: it names a tag ('v1'); scopes name "
        "repositories, not versions; images it named fall under a broader rule",
        "docker scope 'registry.example.com/app@sha256:" + "c" * 64 + "': not converted: it names a digest; "
        "scopes name registries and repositories, not images; images it named fall under a broader rule",
        "docker scope 'busybox': not converted: "
        "it means the same as docker scope 'docker.io/library/busybox'",
    ]


def test_other_transports_and_unknown_fields_warn(folder: Path) -> None:
    result, _ = convert(
        folder,
        {},
        transports={"atomic": {"": [{"type": "reject"}]}, "docker-daemon": {}, "docker": {}},
        comment="x",
    )
    assert result.warnings == [
        "top-level field 'comment': unknown in containers-policy.json, ignored",
        "transport 'atomic': not converted; trust pulls only from registries ('docker' transport)",
        "transport 'docker-daemon': not converted; trust pulls only from registries ('docker' transport)",
    ]


def test_odd_scope_text_is_quoted_safely(folder: Path) -> None:
    # The scope is refused, but its text goes into a warning, never raw into the YAML.
    result, policy = convert(folder, {'evil.example.com/x"\ndefault: {insecure-accept-anything: true}': []})
    assert policy.default.kind is RuleKind.REJECT
    assert policy.rules == ()
    assert len(result.warnings) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"default": [{"type": "reject"}],\n "default": []}', "duplicate key 'default'"),
        ('{"default": [\n{"type": "reject"},\n]}', ":3: not valid JSON"),
        ('{"transports": {}}', "the containers policy has no 'default'"),
        ("[]", "a containers-policy.json must be a JSON object"),
        ('{"default": [], "transports": []}', "'transports' must be a JSON object"),
    ],
)
def test_files_that_are_not_containers_policies(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(PolicyError) as caught:
        import_containers_policy(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file: No such file or directory"):
        import_containers_policy(tmp_path / "absent.json")
