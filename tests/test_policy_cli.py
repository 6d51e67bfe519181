"""`trust policy check | import` through the CLI: summaries, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.images import build_image, busybox_layer, push_image
from support.registry import Registry
from support.vectors import VECTORS as SHARED_VECTORS

from trust.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
VECTORS = SHARED_VECTORS / "cosign-containers-image"


def test_check_example_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(ROOT / "keys-example" / "policy.yaml")]) == 0
    out = capsys.readouterr().out
    assert "4 rules" in out and "authority example:" in out and "authority example-notary:" in out
    assert "attestation built-by-ci: https://slsa.dev/provenance/v1 by example where" in out


def test_example_notation_chain_signs_what_the_example_policy_admits(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # keys-example/notation: the README's Notation walk-through must keep working (certificates expire).
    pushed = push_image(registry, "demo/notary", build_image([busybox_layer()]), tag="v1")
    store, policy = str(tmp_path / "store"), str(ROOT / "keys-example" / "policy.yaml")
    assert main(["verify", "--store", store, "--policy", policy, pushed.by_digest]) == 3
    notation = ROOT / "keys-example" / "notation"
    key, chain = str(notation / "release.key"), str(notation / "release-chain.pem")
    assert main(["sign", "--format", "notation", "--key", key, "--cert", chain, pushed.by_digest]) == 0
    capsys.readouterr()
    assert main(["verify", "--store", store, "--policy", policy, "--output", "json", pushed.by_digest]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    evaluation = record["evaluation"]
    assert evaluation["decision"] == "allow" and evaluation["authorities"][0]["authority"] == "example-notary"


def test_check_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - scope: registry.example.com\n    treshold: 2\ndefault:\n  reject: true\n"
    )
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:4" in err and "threshold" in err
    assert main(["policy", "check", str(tmp_path / "missing.yaml")]) == 2


def test_import_containers_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "policy.json"
    source.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        "registry.example.com/team": [
                            {"type": "sigstoreSigned", "keyPath": str(VECTORS / "cosign.pub")}
                        ],
                        "docker.io/library/busybox": [{"type": "insecureAcceptAnything"}],
                        "quay.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/x.gpg"}],
                    }
                },
            }
        )
    )
    assert main(["policy", "import", str(source)]) == 0
    captured = capsys.readouterr()
    converted = tmp_path / "converted.yaml"
    converted.write_text(captured.out)
    assert "GPG" in captured.err  # what could not be converted is said on stderr
    assert main(["policy", "check", str(converted)]) == 0


def test_the_gate_decides_from_manifests_and_signatures_and_pull_adds_the_layers(
    registry: Registry, repo_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_PASSWORD", "pw")
    assert main(["keygen", "--output-prefix", str(tmp_path / "k")]) == 0
    image = build_image([busybox_layer()])
    pushed = push_image(registry, repo_name, image)
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    assert main(["sign", "--tlog-upload=false", "--key", str(tmp_path / "k.key"), ref]) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nauthorities:\n  a:\n    cosign-keys: [{tmp_path / 'k.pub'}]\n"
        f"rules:\n  - scope: {registry.host}/{repo_name}\n    signed-by: [a]\ndefault:\n  reject: true\n"
    )
    layer = image.layers[0].digest.split(":")[1]
    gate, pulled = tmp_path / "gate", tmp_path / "pulled"
    assert main(["verify", "--policy", str(policy), "--store", str(gate), ref]) == 0
    assert not (gate / "blobs" / "sha256" / layer).exists()  # no layer was downloaded
    [decision] = [json.loads(line) for line in (gate / "meta" / "decisions.jsonl").read_text().splitlines()]
    assert decision["decision"] == "allow" and decision["digest"] == pushed.digest
    assert main(["verify", "--policy", str(policy), "--pull", "--store", str(pulled), ref]) == 0
    assert (pulled / "blobs" / "sha256" / layer).exists()
    assert main(["verify", "--key", str(tmp_path / "k.pub"), "--pull", ref]) == 2
