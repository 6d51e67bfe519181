"""Admission and the CI gate: policy + real registry + real signatures → decisions, logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import HostileRegistry
from support.images import build_index, multiplatform_images, push_image, push_index, simple_image
from support.registry import Registry

from policy.admission import PolicyDenied, admit, evaluate
from policy.loader import load_policy_text
from pull.clients import RegistryClients
from pull.reference import Reference
from pull.store import ContentStore
from trust.cli.app import main
from trust.cosign.signing import sign_image
from trust.keys.keyfiles import KeySigner, generate_keypair, load_private_key


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[KeySigner, Path]]:
    folder = tmp_path_factory.mktemp("authorities")
    out = {}
    for name in ("a", "b", "c", "d"):
        private_pem, public_pem = generate_keypair(b"")
        (folder / f"{name}.pub").write_bytes(public_pem)
        out[name] = (KeySigner(load_private_key(private_pem, b"")), folder / f"{name}.pub")
    return out


def write_policy(folder: Path, body: str, signers: dict[str, tuple[KeySigner, Path]]) -> Path:
    authorities = "".join(f"  {n}:\n    cosign-keys: [{p}]\n" for n, (_, p) in signers.items())
    path = folder / "policy.yaml"
    path.write_text(f"version: 1\nauthorities:\n{authorities}{body}")
    return path


def sign(registry: Registry, ref: str, *names: str, signers: dict[str, tuple[KeySigner, Path]]) -> None:
    with RegistryClients() as clients:
        for name in names:
            sign_image(clients, Reference.parse(ref), signers[name][0])


def decisions(store: Path) -> list[dict[str, object]]:
    path = store / "meta" / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("signed_by", "allowed"), [(("a",), False), (("a", "b"), True), (("a", "b", "c"), True)]
)
def test_threshold_two_of_three(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    signers: dict[str, tuple[KeySigner, Path]],
    signed_by: tuple[str, ...],
    allowed: bool,
) -> None:
    pushed = push_image(registry, repo_name, simple_image(repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    sign(registry, ref, *signed_by, "d", signers=signers)  # d is not one of the three: never counts
    path = write_policy(
        tmp_path,
        f"rules:\n  - scope: {registry.host}/{repo_name}\n    signed-by: [a, b, c]\n    threshold: 2\n"
        "default:\n  reject: true\n",
        signers,
    )
    store = tmp_path / "store"
    assert main(["verify", "--policy", str(path), "--store", str(store), ref]) == (0 if allowed else 3)
    [record] = decisions(store)
    assert record["decision"] == ("allow" if allowed else "deny")
    assert record["digest"] == pushed.digest
    outcomes = {a["authority"]: a["satisfied"] for a in record["authorities"]}  # type: ignore[union-attr]
    assert outcomes == {name: name in signed_by for name in ("a", "b", "c")}
    assert record["rule"] == f"{registry.host}/{repo_name}" and record["mode"] == "enforce"


def test_admitted_image_is_exactly_what_was_verified(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]]
) -> None:
    index = build_index(multiplatform_images())
    pushed = push_index(registry, repo_name, index, tag="v1")
    arm = index.image_for("linux/arm64")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    sign(registry, f"{registry.host}/{repo_name}@{arm.digest}", "a", signers=signers)
    body = (
        f"rules:\n  - scope: {registry.host}\n    signed-by: [a]\n    sign-target: manifest\n"
        "default:\n  reject: true\n"
    )
    policy = load_policy_text(body_with(signers, body), tmp_path)
    store = ContentStore.open(tmp_path / "store")
    from pull.manifest import Platform

    with RegistryClients() as clients:
        image = admit(Reference.parse(ref), policy, store, clients, platform=Platform.parse("linux/arm64"))
        assert str(image.manifest_digest) == arm.digest and str(image.index_digest) == pushed.digest
        assert [str(layer.digest) for layer in image.layers] == [layer.digest for layer in arm.layers]
        assert all(store.has(layer.digest) for layer in image.layers)
        assert image.decision.allowed and image.decision.rule == registry.host
        # The amd64 manifest and the index are unsigned: requiring them denies.
        both = load_policy_text(
            body_with(signers, body.replace("sign-target: manifest", "sign-target: both")), tmp_path
        )
        with pytest.raises(PolicyDenied, match="no signatures found for the index"):
            admit(Reference.parse(ref), both, store, clients, platform=Platform.parse("linux/arm64"))
        with pytest.raises(PolicyDenied):
            admit(Reference.parse(ref), policy, store, clients, platform=Platform.parse("linux/amd64"))


def body_with(signers: dict[str, tuple[KeySigner, Path]], body: str) -> str:
    authorities = "".join(f"  {n}:\n    cosign-keys: [{p}]\n" for n, (_, p) in signers.items())
    return f"version: 1\nauthorities:\n{authorities}{body}"


def test_audit_mode_allows_and_records(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pushed = push_image(registry, repo_name, simple_image(b"audit " + repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    rules = f"rules:\n  - scope: {registry.host}\n    signed-by: [a]\n    mode: audit\n"
    path = write_policy(tmp_path, rules + "default:\n  reject: true\n", signers)
    store = tmp_path / "store"
    assert main(["verify", "--policy", str(path), "--store", str(store), ref]) == 0
    assert "trust: audit:" in capsys.readouterr().err
    [record] = decisions(store)
    assert record["decision"] == "allow-audit" and record["mode"] == "audit"


def test_tag_only_reference_is_refused_before_any_network_call(
    tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    with HostileRegistry() as hostile:
        image = hostile.add_image("team/app", "v1", [b"layer"])
        path = write_policy(tmp_path, "rules: []\ndefault:\n  signed-by: [a]\n", signers)
        store = tmp_path / "store"
        ContentStore.open(store).put_bytes(image.manifest, Reference.parse(f"x/y@{image.digest}").digest)  # type: ignore[arg-type]
        assert (
            main(["verify", "--policy", str(path), "--store", str(store), f"{hostile.host}/team/app:v1"]) == 3
        )
        assert hostile.requests == []
        assert "pin a digest" in capsys.readouterr().err
        [record] = decisions(store)
        assert record["decision"] == "deny"


def test_reject_and_accept_anything(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pushed = push_image(registry, repo_name, simple_image(b"any " + repo_name.encode()), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    path = write_policy(
        tmp_path,
        f"rules:\n  - scope: {registry.host}/{repo_name}\n    insecure-accept-anything: true\n"
        f"  - scope: {registry.host}\n    reject: true\ndefault:\n  reject: true\n",
        signers,
    )
    store = tmp_path / "store"
    assert main(["verify", "--policy", str(path), "--store", str(store), ref]) == 0
    assert "accepts anything" in capsys.readouterr().err
    other = push_image(registry, f"{repo_name}-other", simple_image(b"other"), tag="v1")
    other_ref = f"{registry.host}/{repo_name}-other@{other.digest}"
    assert main(["verify", "--policy", str(path), "--store", str(store), other_ref]) == 3
    assert "rejects every image" in capsys.readouterr().err
    assert [r["decision"] for r in decisions(store)] == ["allow", "deny"]


def test_gate_many_refs_worst_outcome_json_and_sarif(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    good = push_image(registry, repo_name, simple_image(b"gate good"), tag="good")
    bad = push_image(registry, repo_name, simple_image(b"gate bad"), tag="bad")
    refs = [f"{registry.host}/{repo_name}@{d}" for d in (good.digest, bad.digest)]
    sign(registry, refs[0], "a", signers=signers)
    path = write_policy(
        tmp_path,
        f"rules:\n  - scope: {registry.host}\n    signed-by: [a]\ndefault:\n  reject: true\n",
        signers,
    )
    store = str(tmp_path / "store")
    missing = f"{registry.host}/{repo_name}@sha256:{'0' * 64}"
    capsys.readouterr()
    assert main(["verify", "--policy", str(path), "--store", store, "-o", "json", *refs, missing]) == 5
    records = json.loads(capsys.readouterr().out)
    assert [(r["outcome"], r["exitCode"]) for r in records] == [
        ("allowed", 0),
        ("denied", 3),
        ("could-not-check", 5),
    ]
    assert main(["verify", "--policy", str(path), "--store", store, "-o", "sarif", *refs]) == 3
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0"
    [result] = sarif["runs"][0]["results"]
    assert result["ruleId"] == "trust/denied" and refs[1] in result["message"]["text"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] > 1


def test_explain_shows_rule_requirements_and_signatures(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pushed = push_image(registry, repo_name, simple_image(b"explain"), tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    sign(registry, ref, "d", signers=signers)
    path = write_policy(
        tmp_path,
        f"rules:\n  - scope: {registry.host}\n    signed-by: [a, b]\ndefault:\n  reject: true\n",
        signers,
    )
    capsys.readouterr()
    assert main(["policy", "explain", ref, "--policy", str(path), "--store", str(tmp_path / "s")]) == 3
    out = capsys.readouterr().out
    assert f"scope {registry.host}" in out
    assert "requires:  1 of [a, b]" in out
    assert "[FAIL] a (cosign-keys)" in out and "unknown-key" in out
    assert "decision:  deny" in out
    assert not (tmp_path / "s" / "meta" / "decisions.jsonl").exists()  # explaining is not deciding


def test_registry_failure_is_could_not_check_and_logged(
    tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]]
) -> None:
    path = write_policy(tmp_path, "rules: []\ndefault:\n  signed-by: [a]\n", signers)
    store = tmp_path / "store"
    ref = f"127.0.0.1:1/team/app@sha256:{'1' * 64}"
    assert main(["verify", "--policy", str(path), "--store", str(store), ref]) == 5
    [record] = decisions(store)
    assert record["decision"] == "error"


def test_policy_and_key_flags_are_exclusive(tmp_path: Path) -> None:
    assert main(["verify", "x/y@sha256:" + "1" * 64]) == 2
    assert main(["verify", "--policy", str(tmp_path / "p.yaml"), "--key", str(tmp_path / "k"), "x/y"]) == 2
    assert main(["verify", "--key", str(tmp_path / "k"), "-o", "sarif", "x/y"]) == 2


def test_evaluate_returns_denial_without_raising(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"evaluate"), tag="v1")
    policy = load_policy_text(body_with(signers, "rules: []\ndefault:\n  signed-by: [a]\n"), tmp_path)
    with RegistryClients() as clients:
        admission = evaluate(
            Reference.parse(f"{registry.host}/{repo_name}@{pushed.digest}"),
            policy,
            ContentStore.open(tmp_path / "store"),
            clients,
            log=False,
        )
    assert admission.image is None and admission.evaluation.decision == "deny"


def test_an_index_signed_without_recursive_is_denied_with_what_to_do(
    registry: Registry, repo_name: str, tmp_path: Path, signers: dict[str, tuple[KeySigner, Path]]
) -> None:
    """`cosign sign` of a multi-platform tag without --recursive signs only the index."""
    index = build_index(multiplatform_images())
    pushed = push_index(registry, repo_name, index, tag="v1")
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    sign(registry, ref, "a", signers=signers)  # the index only
    body = f"rules:\n  - scope: {registry.host}\n    signed-by: [a]\ndefault:\n  reject: true\n"
    from pull.manifest import Platform

    with RegistryClients() as clients:
        store = ContentStore.open(tmp_path / "store")
        policy = load_policy_text(body_with(signers, body), tmp_path)
        with pytest.raises(PolicyDenied) as denied:
            admit(Reference.parse(ref), policy, store, clients, platform=Platform.parse("linux/amd64"))
        reasons = " ".join(denied.value.evaluation.reasons)
        assert f"a signed the index {pushed.digest} but not the platform manifest" in reasons
        assert "--recursive" in reasons and "sign-target" in reasons
        # requiring both the index and the manifest: the index alone is not enough either
        both = load_policy_text(
            body_with(signers, body.replace("    signed-by", "    sign-target: both\n    signed-by")),
            tmp_path,
        )
        with pytest.raises(PolicyDenied, match="no signatures found for the manifest"):
            admit(Reference.parse(ref), both, store, clients, platform=Platform.parse("linux/amd64"))
        # and signing the index is what sign-target: index asks for
        index_only = load_policy_text(
            body_with(signers, body.replace("    signed-by", "    sign-target: index\n    signed-by")),
            tmp_path,
        )
        assert admit(Reference.parse(ref), index_only, store, clients, platform=Platform.parse("linux/amd64"))
