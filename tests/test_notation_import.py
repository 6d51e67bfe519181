"""`trust policy import` of Notation trust policies: the upstream vectors, Notation's validation rules,
trust store resolution, and what converts (or fails closed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.vectors import VECTORS as SHARED_VECTORS

from policy.loader import load_policy_text
from policy.model import NotationAuthority, NotationLevel, RuleKind
from pull.digest import Digest
from trust.cli.app import main
from trust.cosign.simple_signing import Reason

VECTORS = SHARED_VECTORS / "notation"
E2E_CERT = VECTORS / "localkeys" / "e2e.crt"


@pytest.fixture
def notation_dir(tmp_path: Path) -> Path:
    """A folder laid out as Notation's configuration: trust policies next to `truststore/`."""
    for store in ("e2e", "second"):
        folder = tmp_path / "truststore" / "x509" / "ca" / store
        folder.mkdir(parents=True)
        shutil.copy(E2E_CERT, folder / "e2e.crt")
    for policy in (VECTORS / "trustpolicies").iterdir():
        shutil.copy(policy, tmp_path / policy.name)
    return tmp_path


def run_import(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["policy", "import", *extra, str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(folder: Path, policies: list[dict[str, Any]], version: str = "1.0") -> Path:
    path = folder / "trustpolicy.json"
    path.write_text(json.dumps({"version": version, "trustPolicies": policies}))
    return path


def strict(name: str = "p", scopes: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "name": name,
        "registryScopes": scopes or ["*"],
        "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:e2e"],
        "trustedIdentities": ["*"],
    }
    policy.update(changes)
    return {k: v for k, v in policy.items() if v is not None}


# --- the vectors -------------------------------------------------------------------------------


def test_any_registry_scope_becomes_the_default(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_import(notation_dir / "any_registry_scope_trust_policy.json", capsys)
    assert code == 0
    document = yaml.safe_load(out)
    assert document["default"] == {"signed-by": ["notation-e2e"]}
    authority = document["authorities"]["notation-e2e"]["notation"]
    assert authority == {
        "trust-store": str(notation_dir / "truststore" / "x509" / "ca" / "e2e"),
        "trusted-identities": ["*"],
        "level": "strict",
    }
    policy = load_policy_text(out, notation_dir)
    assert policy.default.kind is RuleKind.SIGNED and not policy.rules


def test_audit_level_is_kept(notation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_import(notation_dir / "audit_trustpolicy.json", capsys)
    assert code == 0
    loaded = load_policy_text(out, notation_dir).authorities["notation-e2e"]
    assert isinstance(loaded, NotationAuthority) and loaded.level is NotationLevel.AUDIT


def test_multiple_registry_scopes_become_rules_and_the_default_rejects(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_import(notation_dir / "multiple_registry_scope_trustpolicy.json", capsys)
    assert code == 0
    document = yaml.safe_load(out)
    rules = {rule["scope"]: rule for rule in document["rules"]}
    assert list(rules) == [
        "localhost:5000/test-repo3",
        "localhost:5000/test-repo3/*",
        "localhost:5000/test-repo2",
        "localhost:5000/test-repo2/*",
    ]
    assert rules["localhost:5000/test-repo3"]["signed-by"] == ["notation-e2e"]
    assert rules["localhost:5000/test-repo2/*"]["reject"] is True  # below the scope: no policy applies
    assert document["default"] == {"reject": True}  # Notation fails when no policy applies
    assert err == ""


def test_deeply_nested_trust_policy_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trustpolicy.json"
    path.write_text('{"trustPolicies": ' + "[" * 3000 + "]" * 3000 + "}")
    code, out, err = run_import(path, capsys)
    assert code == 2 and out == "" and "nested too deeply" in err


def test_invalid_format_vector_fails_with_the_reason(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_import(notation_dir / "invalid_format_trustpolicy.json", capsys)
    assert code == 2 and out == ""
    assert "invalid_format_trustpolicy.json:7: invalid Notation trust policy: malformed JSON" in err


def test_imported_policy_verifies_the_vector_layout(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_notation import E2E_SUBJECT, layout_attached

    from trust.notation.signatures import verify_notation_attached

    _, out, _ = run_import(notation_dir / "any_registry_scope_trust_policy.json", capsys)
    authority = load_policy_text(out, notation_dir).authorities["notation-e2e"]
    assert isinstance(authority, NotationAuthority)
    for layout, reason in (("e2e-valid-signature", Reason.VALID), ("e2e-expired-signature", Reason.EXPIRED)):
        attached = layout_attached(VECTORS / "oci_layout" / layout, E2E_SUBJECT)
        [outcome] = verify_notation_attached(attached, Digest.parse(str(E2E_SUBJECT)), authority)
        assert outcome.reason is reason


# --- Notation's validation rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([], "'trustPolicies' must be a non-empty list"),
        ([strict(name="")], "has no name"),
        ([strict(), strict()], "two trust policies are named 'p'"),
        ([strict(), strict(name="q")], "more than one trust policy has the global scope"),
        ([strict(scopes=["*", "r.example.com/a"])], "global scope '*' must be the only scope"),
        ([strict(scopes=["r.example.com/*"])], "contains '*'"),
        ([strict(scopes=["app"])], "not a fully qualified repository"),
        ([strict(scopes=["r.example.com/a", "r.example.com/a"])], "lists a registry scope twice"),
        (
            [strict(scopes=["r.example.com/a"]), strict(name="q", scopes=["r.example.com/a"])],
            "is in both 'p' and 'q'",
        ),
        ([strict(signatureVerification={"level": "lenient"})], "level 'lenient' is not one of"),
        ([strict(signatureVerification=None)], "needs 'signatureVerification'"),
        (
            [strict(signatureVerification={"level": "strict", "override": {"integrity": "log"}})],
            "integrity validation cannot be overridden",
        ),
        (
            [strict(signatureVerification={"level": "strict", "override": {"expiry": "skip"}})],
            "override expiry: 'skip' is not one of",
        ),
        (
            [
                strict(
                    scopes=["r.example.com/a"],
                    signatureVerification={"level": "skip", "override": {"expiry": "log"}},
                )
            ],
            "level skip cannot be overridden",
        ),
        (
            [strict(signatureVerification={"level": "skip"}, trustStores=None, trustedIdentities=None)],
            "global scope",
        ),
        ([strict(scopes=["r.example.com/a"], signatureVerification={"level": "skip"})], "remove them"),
        ([strict(trustStores=["xyz:e2e"])], "is not TYPE:NAME"),
        ([strict(trustStores=["ca:../etc"])], "is not TYPE:NAME"),
        ([strict(trustStores=[])], "needs 'trustStores'"),
        ([strict(trustStores=["ca:missing"])], "trust store ca:missing not found"),
        ([strict(trustedIdentities=[])], "needs 'trustedIdentities'"),
        ([strict(trustedIdentities=["*", "x509.subject: C=US, ST=WA, O=a"])], "must be the only entry"),
        ([strict(trustedIdentities=["x509.subject: C=US, O=a"])], "C, ST and O are required"),
        ([strict(trustedIdentities=["CN=a"])], "does not start with"),
        (
            [
                strict(
                    trustedIdentities=[
                        "x509.subject: C=US, ST=WA, O=a",
                        "x509.subject: C=US, ST=WA, O=a, OU=b",
                    ]
                )
            ],
            "overlap",
        ),
        ([strict(extra=1)], "unknown field 'extra'"),
    ],
)
def test_invalid_trust_policies_fail_as_notation_says(
    notation_dir: Path, capsys: pytest.CaptureFixture[str], policies: list[dict[str, Any]], message: str
) -> None:
    code, out, err = run_import(write(notation_dir, policies), capsys)
    assert code == 2 and out == ""
    assert "invalid Notation trust policy" in err and message in err


def test_version_and_top_level_fields(notation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "version must be '1.0'" in run_import(write(notation_dir, [strict()], version="2.0"), capsys)[2]
    path = notation_dir / "extra.json"
    path.write_text(json.dumps({"version": "1.0", "trustPolicies": [strict()], "more": 1}))
    assert "unknown top-level field 'more'" in run_import(path, capsys)[2]
    path.write_text('{"version": "1.0", "version": "1.0", "trustPolicies": []}')
    code, _, err = run_import(path, capsys)
    assert code == 2 and "duplicate key 'version'" in err


def test_symlinked_trust_store_is_refused(notation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = notation_dir / "truststore" / "x509" / "ca"
    (ca / "linked").symlink_to(ca / "e2e")
    code, _, err = run_import(write(notation_dir, [strict(trustStores=["ca:linked"])]), capsys)
    assert code == 2 and "symlink" in err
    (ca / "e2e" / "copy.crt").symlink_to(ca / "e2e" / "e2e.crt")
    code, _, err = run_import(write(notation_dir, [strict()]), capsys)
    assert code == 2 and "copy.crt" in err and "symlink" in err


# --- what converts -----------------------------------------------------------------------------


def test_skip_becomes_accept_anything_and_overrides_fail_closed(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = [
        strict(
            name="legacy",
            scopes=["r.example.com/legacy"],
            signatureVerification={"level": "skip"},
            trustStores=None,
            trustedIdentities=None,
        ),
        strict(
            name="relaxed",
            scopes=["r.example.com/relaxed"],
            signatureVerification={"level": "strict", "override": {"expiry": "log"}},
        ),
        strict(
            name="same",
            scopes=["r.example.com/same"],
            signatureVerification={"level": "permissive", "override": {"expiry": "log"}},
        ),
        strict(name="global", trustStores=["ca:e2e", "ca:second"]),
    ]
    code, out, err = run_import(write(notation_dir, policies), capsys)
    assert code == 0, err
    rules = {rule["scope"]: rule for rule in yaml.safe_load(out)["rules"]}
    assert rules["r.example.com/legacy"] == {
        "scope": "r.example.com/legacy",
        "insecure-accept-anything": True,
    }
    assert rules["r.example.com/relaxed"]["reject"] is True
    assert "override" in err and "'relaxed'" in err
    assert rules["r.example.com/same"]["signed-by"] == ["notation-same"]  # the override changes nothing
    document = yaml.safe_load(out)
    assert document["default"] == {"signed-by": ["notation-global-e2e", "notation-global-second"]}
    assert document["authorities"]["notation-same"]["notation"]["level"] == "permissive"
    load_policy_text(out, notation_dir)


def test_repositories_below_a_notation_scope_get_the_global_policy(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Notation scopes are exact repositories: `skip` on `r.example.com/team` must not turn off
    verification for `r.example.com/team/prod` (trust scopes are prefixes)."""
    from pull.reference import Reference

    policies = [
        strict(
            name="dev",
            scopes=["r.example.com/team"],
            signatureVerification={"level": "skip"},
            trustStores=None,
            trustedIdentities=None,
        ),
        strict(name="app", scopes=["r.example.com/team/app"]),
        strict(name="global"),
    ]
    code, out, err = run_import(write(notation_dir, policies), capsys)
    assert code == 0, err
    policy = load_policy_text(out, notation_dir)

    def kind(reference: str) -> tuple[RuleKind, tuple[str, ...]]:
        rule = policy.rule_for(Reference.parse(reference)).rule
        return rule.kind, tuple(a.name for a in rule.authorities)

    assert kind("r.example.com/team:v1") == (RuleKind.ACCEPT_ANYTHING, ())
    assert kind("r.example.com/team/prod:v1") == (RuleKind.SIGNED, ("notation-global",))
    assert kind("r.example.com/team/prod/deep:v1") == (RuleKind.SIGNED, ("notation-global",))
    assert kind("r.example.com/team/app:v1") == (RuleKind.SIGNED, ("notation-app",))
    assert kind("r.example.com/team/app/sub:v1") == (RuleKind.SIGNED, ("notation-global",))
    assert kind("r.example.com/other:v1") == (RuleKind.SIGNED, ("notation-global",))


def test_signing_authority_and_tsa_stores(notation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("signingAuthority", "tsa"):
        folder = notation_dir / "truststore" / "x509" / kind / "e2e"
        folder.mkdir(parents=True)
        shutil.copy(E2E_CERT, folder / "e2e.crt")
    policies = [
        strict(name="sa", scopes=["r.example.com/sa"], trustStores=["signingAuthority:e2e"]),
        strict(name="tsa", scopes=["r.example.com/tsa"], trustStores=["ca:e2e", "tsa:e2e"]),
    ]
    code, out, err = run_import(write(notation_dir, policies), capsys)
    assert code == 0
    rules = {rule["scope"]: rule for rule in yaml.safe_load(out)["rules"]}
    assert rules["r.example.com/sa"]["reject"] is True
    assert rules["r.example.com/tsa"]["signed-by"] == ["notation-tsa-e2e"]
    assert "signingAuthority:e2e not converted" in err and "tsa:e2e" not in err
    authority = yaml.safe_load(out)["authorities"]["notation-tsa-e2e"]["notation"]
    assert authority["tsa-store"] == str(notation_dir / "truststore" / "x509" / "tsa" / "e2e")


def test_revocation_skip_and_verify_timestamp_convert(
    notation_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`"revocation": "skip"` keeps today's behaviour (no check) instead of rejecting the scope;
    `verifyTimestamp: afterCertExpiry` carries over; other overrides still reject."""
    verification = {
        "level": "strict",
        "override": {"revocation": "skip"},
        "verifyTimestamp": "afterCertExpiry",
    }
    policies = [
        strict(name="skip", scopes=["r.example.com/skip"], signatureVerification=verification),
        strict(
            name="logged",
            scopes=["r.example.com/logged"],
            signatureVerification={"level": "strict", "override": {"revocation": "log"}},
        ),
    ]
    code, out, err = run_import(write(notation_dir, policies), capsys)
    assert code == 0
    document = yaml.safe_load(out)
    authority = document["authorities"]["notation-skip"]["notation"]
    assert authority["revocation"] == "skip" and authority["verify-timestamp"] == "after-cert-expiry"
    rules = {rule["scope"]: rule for rule in document["rules"]}
    assert rules["r.example.com/skip"]["signed-by"] == ["notation-skip"]
    assert rules["r.example.com/logged"]["reject"] is True and "cannot be expressed" in err


def test_format_option(notation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = notation_dir / "any_registry_scope_trust_policy.json"
    assert run_import(path, capsys, "--format", "notation")[0] == 0
    code, _, err = run_import(path, capsys, "--format", "containers")
    assert code == 2 and "default" in err  # read as a containers-policy.json, it has no 'default'
    renamed = notation_dir / "policy.json"
    shutil.copy(path, renamed)
    assert run_import(renamed, capsys)[0] == 0  # detected by content, not by name
