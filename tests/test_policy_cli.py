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
    assert "3 rules" in out and "authority example:" in out and "authority example-notary:" in out


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
