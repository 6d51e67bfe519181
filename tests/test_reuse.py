"""Reusable admission decisions (`policy/reuse.py`, `reuse-decisions` in a policy file).

Covered here:
- the loader: `reuse-decisions` durations accepted and refused, and `Policy.inputs`;
- end to end with a real registry: a passing `trust run` writes a record under `meta/admitted/`,
  and the next `trust run` / `trust create` of the same image is admitted with the registry
  *stopped*, logged with `"reused"`. A stopped registry is how "not reused" shows: a full admission
  cannot ask it and exits 5;
- what ends reuse: no opt-in, an edited policy, a replaced key file, the clock, a tampered record,
  a blob gone or modified, another trust version, another policy file;
- what is never reused or recorded: `trust verify` decisions, denials, audit-mode admissions;
- the reused `AdmittedImage` is the one admitted originally.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.images import Image, build_image, build_index, busybox_layer, push_image, push_index
from support.registry import Registry, RegistryFactory

import policy.admission as admission
import policy.reuse
from policy.admission import PolicyDenied, admit_reference
from policy.errors import PolicyError
from policy.loader import load_policy, load_policy_text
from policy.reuse import code_fingerprint, inputs_before_deciding, recall
from pull.clients import RegistryClients
from pull.records import replace
from pull.reference import Reference
from pull.store import ContentStore
from trust import __version__
from trust.cli.app import main
from trust.cli.common import exit_code_for
from trust.cosign.signing import sign_image
from trust.keys.keyfiles import KeySigner, generate_keypair, load_private_key

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="containers need root (mounts, namespaces, cgroups)"
)

HEADER = "version: 1\nauthorities:\n  a:\n    cosign-keys: [a.pub]\n"
RULES = "rules:\n  - scope: example.com/app\n    signed-by: [a]\ndefault:\n  reject: true\n"


@dataclass(frozen=True)
class Keys:
    signer: KeySigner
    public: bytes
    """The signer's public key."""
    other: bytes
    """An unrelated public key."""


@pytest.fixture(scope="module")
def keys() -> Keys:
    """Generated once per module: making and loading a key takes ~0.2 s each (scrypt)."""
    private_pem, public_pem = generate_keypair(b"")
    return Keys(KeySigner(load_private_key(private_pem, b"")), public_pem, generate_keypair(b"")[1])


@pytest.fixture(scope="module")
def key_folder(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """A folder holding `a.pub` and `b.pub`, two unrelated public keys."""
    folder = tmp_path_factory.mktemp("keys")
    (folder / "a.pub").write_bytes(keys.public)
    (folder / "b.pub").write_bytes(keys.other)
    return folder


# -- the loader -----------------------------------------------------------------------------------


def policy_with(reuse_line: str) -> str:
    return HEADER + reuse_line + RULES


@pytest.mark.parametrize(
    ("line", "seconds"),
    [
        ("reuse-decisions: 10m\n", 600),
        ("reuse-decisions: 30s\n", 30),
        ("reuse-decisions: 2h\n", 7200),
        ("reuse-decisions: 24h\n", 86400),
        ("reuse-decisions: 86400s\n", 86400),
        ("reuse-decisions: 0\n", 0),
        ('reuse-decisions: "0s"\n', 0),
        ("", 0),
    ],
)
def test_reuse_decisions_durations(key_folder: Path, line: str, seconds: int) -> None:
    assert load_policy_text(policy_with(line), key_folder).reuse_seconds == seconds


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("25h", "longer than a day"),
        ("1441m", "longer than a day"),
        ("86401s", "longer than a day"),
        ("10", "must be a string"),
        ('"10"', "not a duration"),
        ('"ten minutes"', "not a duration"),
        ("1d", "not a duration"),
        ("-5m", "not a duration"),
        ("010m", "not a duration"),
        ("true", "must be a string, not true/false"),
        ("false", "must be a string, not true/false"),
        ("[10m]", "must be a string, not a list"),
    ],
)
def test_reuse_decisions_refused(key_folder: Path, value: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as refused:
        load_policy_text(policy_with(f"reuse-decisions: {value}\n"), key_folder)
    assert exit_code_for(refused.value) == 2
    assert refused.value.line == 5  # the line of `reuse-decisions`


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_policy_inputs_are_the_files_it_names_with_the_bytes_read(key_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    shutil.copy(key_folder / "a.pub", tmp_path / "keys" / "a.pub")
    text = (
        "version: 1\nauthorities:\n"
        "  a:\n    cosign-keys: [keys/a.pub]\n"
        f"  b:\n    cosign-keys: [{key_folder / 'b.pub'}]\n    rekor-keys: [keys/a.pub]\n"
        "rules:\n  - scope: example.com/app\n    signed-by: [a, b]\ndefault:\n  reject: true\n"
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    # The policy file first, then each file it names, relative ones against its folder, symlinks
    # kept; each with a digest of the bytes the loader read. A file named twice is listed once.
    assert policy.inputs == (
        ((tmp_path / "policy.yaml").absolute(), sha256_of(tmp_path / "policy.yaml")),
        ((tmp_path / "keys" / "a.pub").absolute(), sha256_of(tmp_path / "keys" / "a.pub")),
        ((key_folder / "b.pub").absolute(), sha256_of(key_folder / "b.pub")),
    )
    assert load_policy_text(text, tmp_path).inputs[0][0] == (tmp_path / "keys" / "a.pub")  # no policy file


def test_a_policy_read_from_a_pipe_cannot_be_vouched_for(key_folder: Path) -> None:
    read_end, write_end = os.pipe()
    text = policy_with("reuse-decisions: 10m\n").replace("[a.pub]", f"[{key_folder / 'a.pub'}]")
    os.write(write_end, text.encode())
    os.close(write_end)
    try:
        policy = load_policy(Path(f"/dev/fd/{read_end}"))
    finally:
        os.close(read_end)
    assert policy.inputs[0] == (Path(f"/dev/fd/{read_end}"), None)  # so no decision is recorded
    assert inputs_before_deciding(policy) is not None
    assert None in [digest for _, digest in inputs_before_deciding(policy) or []]


# -- end to end -----------------------------------------------------------------------------------


@dataclass
class Scenario:
    """A busybox image signed by key `a.pub` on a registry of the test's own, a store and a policy."""

    registry: Registry
    folder: Path
    store: Path
    policy: Path
    key: Path
    ref: str
    """The signed image, pinned."""
    unsigned_ref: str
    """Another image under the same scope, not signed."""
    layer_digest: str
    config_digest: str
    other_key: bytes
    """A public key that did not sign anything."""

    def write_policy(self, reuse: str | None = "10m", mode: str = "enforce") -> None:
        self.policy.write_text(
            "version: 1\n"
            + (f"reuse-decisions: {reuse}\n" if reuse is not None else "")
            + f"authorities:\n  a:\n    cosign-keys: [{self.key.name}]\n"
            + f"rules:\n  - scope: {self.registry.host}\n    signed-by: [a]\n    mode: {mode}\n"
            + "default:\n  reject: true\n"
        )

    def trust(self, command: str, *args: str) -> int:
        return main([command, "--store", str(self.store), "--policy", str(self.policy), *args])

    def run(self, ref: str | None = None) -> int:
        return self.trust("run", "--rm", ref or self.ref, "true")

    def verify(self) -> int:
        return self.trust("verify", "--pull", self.ref)  # pulled: a decision run may reuse

    def records(self) -> list[Path]:
        folder = self.store / "meta" / "admitted"
        return sorted(folder.iterdir()) if folder.exists() else []

    def record(self) -> dict[str, Any]:
        [path] = self.records()
        record: dict[str, Any] = json.loads(path.read_text())
        return record

    def edit_record(self, **fields: object) -> None:
        [path] = self.records()
        path.write_text(json.dumps({**self.record(), **fields}))

    def decisions(self) -> list[dict[str, Any]]:
        path = self.store / "meta" / "decisions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def blob(self, digest: str) -> Path:
        return self.store / "blobs" / "sha256" / digest.removeprefix("sha256:")


@pytest.fixture(scope="module")
def images() -> tuple[Image, Image]:
    """Two busybox images: the one signed, and another one."""
    layer = busybox_layer()
    return build_image([layer], cmd=["true"]), build_image([layer], cmd=["false"])


@pytest.fixture
def scenario(
    fresh_registry: RegistryFactory, tmp_path: Path, repo_name: str, keys: Keys, images: tuple[Image, Image]
) -> Iterator[Scenario]:
    registry = fresh_registry()
    signed = push_image(registry, repo_name, images[0], tag="v1")
    unsigned = push_image(registry, repo_name, images[1], tag="v2")
    (tmp_path / "a.pub").write_bytes(keys.public)
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(signed.by_digest), keys.signer)
    setup = Scenario(
        registry=registry,
        folder=tmp_path,
        store=tmp_path / "store",
        policy=tmp_path / "policy.yaml",
        key=tmp_path / "a.pub",
        ref=signed.by_digest,
        unsigned_ref=unsigned.by_digest,
        layer_digest=signed.layers[0].digest,
        config_digest=signed.config.digest,
        other_key=keys.other,
    )
    setup.write_policy()
    yield setup
    with open("/proc/self/mountinfo") as mountinfo:
        assert not [line for line in mountinfo if str(setup.store) in line]


@needs_root
def test_a_recorded_decision_is_reused_without_the_registry(scenario: Scenario) -> None:
    assert scenario.run() == 0
    record = scenario.record()
    assert record["manifest"] == scenario.ref.split("@")[1] and record["config"] == scenario.config_digest
    assert record["policy"] == str(scenario.policy.resolve()) and record["trust"] == __version__
    assert [name for name, _ in record["inputs"]] == [
        str(scenario.policy.resolve()),
        str(scenario.key.resolve()),
    ]
    window = datetime.fromisoformat(record["reuseUntil"]) - datetime.fromisoformat(record["decidedAt"])
    assert window == timedelta(minutes=10)
    first = scenario.decisions()[-1]
    assert first["decision"] == "allow" and "reused" not in first

    scenario.registry.stop()
    assert scenario.run() == 0  # the registry is gone: only a reused decision can admit
    reused = scenario.decisions()[-1]
    assert reused["reused"] == record["decidedAt"]
    assert reused["decision"] == "allow" and reused["reference"] == scenario.ref
    assert scenario.record() == record  # reusing does not rewrite the record

    assert scenario.trust("create", "--name", "warm", scenario.ref, "true") == 0  # create reuses too
    assert scenario.decisions()[-1]["reused"] == record["decidedAt"]
    assert main(["rm", "--store", str(scenario.store), "warm"]) == 0


@needs_root
def test_the_audit_shows_a_reused_decision(scenario: Scenario, capfd: pytest.CaptureFixture[str]) -> None:
    assert scenario.run() == 0
    scenario.registry.stop()
    assert scenario.run() == 0
    capfd.readouterr()
    assert scenario.trust("audit", "--offline", "--output", "json") == 0
    [image] = [i for i in json.loads(capfd.readouterr().out)["images"] if i["digest"] in scenario.ref]
    assert image["lastDecision"]["reused"] == scenario.record()["decidedAt"]


@needs_root
@pytest.mark.parametrize("reuse", [None, "0", "0s"])
def test_no_reuse_unless_the_policy_opts_in(scenario: Scenario, reuse: str | None) -> None:
    scenario.write_policy(reuse=reuse)
    assert scenario.run() == 0
    assert scenario.records() == []
    scenario.registry.stop()
    assert scenario.run() == 5


def edit_policy(scenario: Scenario) -> None:
    with scenario.policy.open("a") as policy:
        policy.write("# a comment is a change too\n")


def replace_key(scenario: Scenario) -> None:
    scenario.key.write_bytes(scenario.other_key)


def another_policy_file(scenario: Scenario) -> None:
    (scenario.folder / "other").mkdir()
    for path in (scenario.policy, scenario.key):
        shutil.copy(path, scenario.folder / "other" / path.name)
    scenario.policy = scenario.folder / "other" / scenario.policy.name  # same text, another file


def garbage_record(scenario: Scenario) -> None:
    scenario.records()[0].write_text("{not json")


def record_names_another_manifest(scenario: Scenario) -> None:
    scenario.edit_record(manifest="sha256:" + "0" * 64)


def record_names_another_config(scenario: Scenario) -> None:
    scenario.edit_record(config=scenario.layer_digest)


def record_without_expiry(scenario: Scenario) -> None:
    record = scenario.record()
    del record["reuseUntil"]
    scenario.records()[0].write_text(json.dumps(record))


def record_of_another_trust_version(scenario: Scenario) -> None:
    scenario.edit_record(trust="0.0.0+other")


def record_of_other_code(scenario: Scenario) -> None:
    scenario.edit_record(code="sha256:" + "1" * 64)  # an upgraded dependency, an edited checkout


def delete_layer_blob(scenario: Scenario) -> None:
    scenario.blob(scenario.layer_digest).unlink()


def modify_config_blob(scenario: Scenario) -> None:
    path = scenario.blob(scenario.config_digest)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes().replace(b'"true"', b'"evil"'))


def record_decided_two_days_ago_for_ever(scenario: Scenario) -> None:
    # Whatever a record claims, a decision is never reused more than 24h after it was made.
    decided = datetime.fromisoformat(scenario.record()["decidedAt"]) - timedelta(days=2)
    scenario.edit_record(decidedAt=decided.isoformat(), reuseUntil="2999-01-01T00:00:00+00:00")


def retarget_a_policy_symlink(scenario: Scenario) -> None:
    # The policy path the operator passes is a link; pointing it at another file must show.
    edited = scenario.folder / "edited.yaml"
    edited.write_text(scenario.policy.read_text() + "# edited\n")
    original = scenario.folder / "original.yaml"
    scenario.policy.rename(original)
    scenario.policy.symlink_to(edited.name)


@needs_root
@pytest.mark.parametrize(
    "change",
    [
        edit_policy,
        retarget_a_policy_symlink,
        record_decided_two_days_ago_for_ever,
        replace_key,
        another_policy_file,
        garbage_record,
        record_names_another_manifest,
        record_names_another_config,
        record_without_expiry,
        record_of_another_trust_version,
        record_of_other_code,
        delete_layer_blob,
        modify_config_blob,
    ],
)
def test_a_change_ends_reuse(scenario: Scenario, change: Callable[[Scenario], None]) -> None:
    assert scenario.run() == 0
    assert len(scenario.records()) == 1
    scenario.registry.stop()
    change(scenario)
    logged = len(scenario.decisions())
    assert scenario.run() == 5  # a full admission, which needs the stopped registry
    [attempt] = scenario.decisions()[logged:]
    assert attempt["decision"] == "error" and "reused" not in attempt


def test_a_record_expires(scenario: Scenario) -> None:
    assert scenario.verify() == 0  # `trust verify` records (it never reuses: see below)
    decided_at = scenario.record()["decidedAt"]
    decided = datetime.fromisoformat(decided_at)
    store = ContentStore.open(scenario.store)
    reference = Reference.parse(scenario.ref)

    def recalled(after: timedelta) -> bool:
        return recall(store, reference, None, scenario.policy, now=decided + after) is not None

    assert recalled(timedelta(minutes=1))
    assert recalled(timedelta(minutes=9, seconds=59))
    assert not recalled(timedelta(minutes=10))  # `reuseUntil` itself is past the window
    assert not recalled(timedelta(minutes=11))
    assert [d.get("reused") for d in scenario.decisions()] == [None, decided_at, decided_at]


def test_verify_never_reuses(scenario: Scenario) -> None:
    assert scenario.verify() == 0
    decided = scenario.record()["decidedAt"]
    scenario.registry.stop()
    assert scenario.verify() == 5
    # The record is good: `trust run`'s admission (reuse=True) takes it with the registry stopped.
    image = admit_reference(
        scenario.ref, policy_path=scenario.policy, store=ContentStore.open(scenario.store), reuse=True
    )
    assert image.decision.reused_from == decided


@needs_root
def test_a_denial_is_never_recorded(scenario: Scenario) -> None:
    assert scenario.run(scenario.unsigned_ref) == 3
    assert scenario.decisions()[-1]["decision"] == "deny"
    assert scenario.records() == []


@needs_root
def test_an_audit_mode_admission_that_failed_is_never_recorded(scenario: Scenario) -> None:
    scenario.write_policy(mode="audit")
    assert scenario.run(scenario.unsigned_ref) == 0  # audit: runs although unsigned
    assert scenario.decisions()[-1]["decision"] == "allow-audit"
    assert scenario.records() == []
    scenario.registry.stop()
    assert scenario.run(scenario.unsigned_ref) == 5


def test_the_reused_image_is_the_admitted_image(scenario: Scenario) -> None:
    store = ContentStore.open(scenario.store)
    first = admit_reference(scenario.ref, policy_path=scenario.policy, store=store, reuse=True)
    assert first.decision.reused_from is None
    scenario.registry.stop()
    again = admit_reference(scenario.ref, policy_path=scenario.policy, store=store, reuse=True)
    assert again.decision.reused_from == scenario.record()["decidedAt"]
    assert again.manifest_digest == first.manifest_digest
    assert again.config_digest == first.config_digest
    assert again.layers == first.layers
    assert again.config == first.config
    assert (again.index_digest, again.repository, again.tag) == (
        first.index_digest,
        first.repository,
        first.tag,
    )
    assert again.decision == replace(first.decision, reused_from=again.decision.reused_from)


def test_a_retargeted_key_symlink_ends_reuse(scenario: Scenario) -> None:
    (scenario.folder / "2024.pub").write_bytes(scenario.key.read_bytes())
    (scenario.folder / "2025.pub").write_bytes(scenario.other_key)
    scenario.key.unlink()
    scenario.key.symlink_to("2024.pub")
    assert scenario.verify() == 0
    scenario.key.unlink()
    scenario.key.symlink_to("2025.pub")  # the policy's a.pub is now another key: the old one is revoked
    store = ContentStore.open(scenario.store)
    assert recall(store, Reference.parse(scenario.ref), None, scenario.policy) is None


@needs_root
def test_a_record_edited_to_name_another_image_is_not_reused(scenario: Scenario) -> None:
    assert main(["pull", "--store", str(scenario.store), scenario.unsigned_ref]) == 0
    assert scenario.run() == 0
    store = ContentStore.open(scenario.store)
    unsigned = Reference.parse(scenario.unsigned_ref)
    assert unsigned.digest is not None
    manifest = json.loads(store.read_blob(unsigned.digest, 1 << 20))
    scenario.registry.stop()
    # The unsigned image's manifest and config are in the store: only the record's tie to the
    # digest asked for keeps them from running under the signed image's decision.
    scenario.edit_record(manifest=str(unsigned.digest), config=manifest["config"]["digest"])
    assert recall(store, Reference.parse(scenario.ref), None, scenario.policy) is None
    assert scenario.run() == 5


# -- inputs taken as the decision used them ------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    registry: Registry
    ref: str
    key: bytes
    other_key: bytes


@pytest.fixture
def signed(
    fresh_registry: RegistryFactory, repo_name: str, keys: Keys, images: tuple[Image, Image]
) -> Signed:
    registry = fresh_registry()
    pushed = push_image(registry, repo_name, images[0], tag="v1")
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(pushed.by_digest), keys.signer)
    return Signed(registry, pushed.by_digest, keys.public, keys.other)


def reuse_policy(host: str, key: str = "a.pub") -> str:
    return (
        f"version: 1\nreuse-decisions: 10m\nauthorities:\n  a:\n    cosign-keys: [{key}]\n"
        f"rules:\n  - scope: {host}\n    signed-by: [a]\ndefault:\n  reject: true\n"
    )


def test_a_key_rotated_by_re_pointing_a_folder_link_ends_reuse(signed: Signed, tmp_path: Path) -> None:
    for release, key in (("v1", signed.key), ("v2", signed.other_key)):
        (tmp_path / release).mkdir()
        (tmp_path / release / "a.pub").write_bytes(key)
        (tmp_path / release / "policy.yaml").write_text(reuse_policy(signed.registry.host))
    (tmp_path / "current").symlink_to("v1")
    policy = tmp_path / "current" / "policy.yaml"
    store = ContentStore.open(tmp_path / "store")
    admit_reference(signed.ref, policy_path=policy, store=store, reuse=True)
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to("v2")  # a release with another key: the old one is revoked
    assert recall(store, Reference.parse(signed.ref), None, policy) is None
    with pytest.raises(PolicyDenied):
        admit_reference(signed.ref, policy_path=policy, store=store, reuse=True)


def test_a_key_replaced_while_a_decision_is_made_ends_reuse(
    signed: Signed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.pub").write_bytes(signed.key)
    policy = tmp_path / "policy.yaml"
    policy.write_text(reuse_policy(signed.registry.host))
    store = ContentStore.open(tmp_path / "store")
    real = admission.signature_source

    def revoking_meanwhile(*args: Any, **kwargs: Any) -> Any:
        (tmp_path / "a.pub").write_bytes(signed.other_key)  # after the policy was loaded
        return real(*args, **kwargs)

    monkeypatch.setattr(admission, "signature_source", revoking_meanwhile)
    admit_reference(signed.ref, policy_path=policy, store=store, reuse=True)  # decided with the old key
    monkeypatch.setattr(admission, "signature_source", real)
    # The record holds the digest of the key the decision used, so the new key does not match it.
    assert recall(store, Reference.parse(signed.ref), None, policy) is None


def test_a_record_from_the_future_is_not_reused(signed: Signed, tmp_path: Path) -> None:
    (tmp_path / "a.pub").write_bytes(signed.key)
    policy = tmp_path / "policy.yaml"
    policy.write_text(reuse_policy(signed.registry.host))
    store = ContentStore.open(tmp_path / "store")
    admit_reference(signed.ref, policy_path=policy, store=store, reuse=True)
    [path] = (tmp_path / "store" / "meta" / "admitted").iterdir()
    decided = datetime.fromisoformat(json.loads(path.read_text())["decidedAt"])
    reference = Reference.parse(signed.ref)
    # Written while the clock was a year ahead, then corrected: the 24h cap must still hold.
    assert recall(store, reference, None, policy, now=decided - timedelta(days=364)) is None
    assert recall(store, reference, None, policy, now=decided + timedelta(seconds=5)) is not None


def test_a_record_for_an_index_must_name_the_manifest_the_index_selects(
    fresh_registry: RegistryFactory, repo_name: str, tmp_path: Path, keys: Keys
) -> None:
    registry = fresh_registry()
    good = build_image([busybox_layer()], cmd=["true"], platform="linux/amd64")
    evil = build_image([busybox_layer()], cmd=["evil"])
    index = push_index(registry, repo_name, build_index([good]), tag="v1")
    unsigned = push_image(registry, repo_name, evil, tag="evil")
    with RegistryClients() as clients:
        sign_image(clients, Reference.parse(index.by_digest), keys.signer)
        sign_image(clients, Reference.parse(f"{registry.host}/{repo_name}@{good.digest}"), keys.signer)
    (tmp_path / "a.pub").write_bytes(keys.public)
    policy = tmp_path / "policy.yaml"
    policy.write_text(reuse_policy(registry.host))
    store = ContentStore.open(tmp_path / "store")
    assert main(["pull", "--store", str(store.root), unsigned.by_digest]) == 0
    first = admit_reference(index.by_digest, policy_path=policy, store=store, reuse=True)
    reference = Reference.parse(index.by_digest)
    again = recall(store, reference, None, policy)
    assert again is not None and again.manifest_digest == first.manifest_digest
    # Edited to run another image that is in the store, under the index's decision:
    [path] = (store.meta / "admitted").iterdir()
    unsigned_digest = Reference.parse(unsigned.by_digest).digest
    assert unsigned_digest is not None
    config = json.loads(store.read_blob(unsigned_digest, 1 << 20))["config"]["digest"]
    path.write_text(
        json.dumps({**json.loads(path.read_text()), "manifest": str(unsigned_digest), "config": config})
    )
    assert recall(store, reference, None, policy) is None


def test_the_code_fingerprint_follows_trusts_modules(tmp_path: Path) -> None:
    installed = Path(policy.reuse.__file__).resolve().parents[1]
    for package in ("trust", "pull", "policy", "run"):
        shutil.copytree(installed / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    first = code_fingerprint(tmp_path)
    assert code_fingerprint(tmp_path) == first
    module = tmp_path / "policy" / "reuse.py"
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000_000))
    second = code_fingerprint(tmp_path)
    assert second != first  # an edited (or reinstalled) module ends reuse
    verifier = tmp_path / "trust" / "sigstore" / "bundles.py"  # in a subpackage: the same
    verifier.write_text(verifier.read_text() + "\n")
    assert code_fingerprint(tmp_path) != second
