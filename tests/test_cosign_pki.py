"""Cosign signatures from your own PKI (`cosign-pki` authorities): the containers/image `pki`
fixtures decide as podman decides, and `trust sign --key K --cert C --cert-chain CH` with an
`openssl ca`-issued certificate verifies through a policy with no Fulcio, SCT or Rekor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from support.images import push_image, simple_image
from support.openssl_pki import OpenSSLCA
from support.registry import Registry

from pull.errors import IntegrityError
from trust.cli.app import main
from trust.cosign import CosignPkiAuthority, Reason
from trust.cosign.dir_image import read_manifest, read_signatures
from trust.cosign.pki import verify_pki_layers
from trust.cosign.simple_signing import SignatureLayer, SignatureOutcome

FIXTURES = Path(__file__).parent / "data" / "containers-pki"
VALID = FIXTURES / "dir-img-cosign-pki-valid"
ROOTS = tuple(x509.load_pem_x509_certificates((FIXTURES / "pki_root_crts.pem").read_bytes()))
INTERMEDIATES = tuple(x509.load_pem_x509_certificates((FIXTURES / "pki_intermediate_crts.pem").read_bytes()))
EMAIL, HOST = "qiwan@redhat.com", "myhost.example.com"


def check_fixture(authority: CosignPkiAuthority, now: datetime | None = None) -> SignatureOutcome:
    from pull.digest import Digest

    signatures = read_signatures(VALID)
    payloads = {signature.layer().digest: signature.payload for signature in signatures}

    def load(layer: SignatureLayer) -> bytes:
        try:
            return payloads[layer.digest]
        except KeyError:
            raise IntegrityError("no payload") from None

    [outcome] = verify_pki_layers(
        [s.layer() for s in signatures],
        load,
        Digest.of_bytes(read_manifest(VALID)),
        "localhost:5000/test",
        authority,
        now=now,
    )
    return outcome


def pki(**changes: object) -> CosignPkiAuthority:
    fields: dict[str, object] = {
        "name": "pki",
        "roots": ROOTS,
        "intermediates": INTERMEDIATES,
        "subject_email": EMAIL,
        "subject_hostname": HOST,
    }
    fields.update(changes)
    return CosignPkiAuthority(**fields)  # type: ignore[arg-type]


def test_the_containers_image_fixture_verifies_as_podman_decides() -> None:
    outcome = check_fixture(pki())
    assert outcome.reason is Reason.VALID, outcome.detail
    assert outcome.key == "pki:CN=Team A Cosign Certificate,OU=Security,O=IT,L=Valencia,C=ES"
    assert check_fixture(pki(subject_hostname=None)).reason is Reason.VALID
    assert check_fixture(pki(subject_email=None)).reason is Reason.VALID


def test_the_fixture_fails_where_podman_fails() -> None:
    wrong_email = check_fixture(pki(subject_email="someone@example.com"))
    assert wrong_email.reason is Reason.UNTRUSTED_CERTIFICATE and "someone@example.com" in wrong_email.detail
    wrong_host = check_fixture(pki(subject_hostname="other.example.com"))
    assert wrong_host.reason is Reason.UNTRUSTED_CERTIFICATE and "other.example.com" in wrong_host.detail
    # The layer's chain is [intermediate, root]: the intermediate serves without the policy's,
    # but the root it carries is dropped (as containers/image does): only the policy's roots count.
    assert check_fixture(pki(intermediates=())).reason is Reason.VALID
    unrelated = check_fixture(pki(roots=_self_signed()))
    assert unrelated.reason is Reason.UNTRUSTED_CERTIFICATE and "does not chain" in unrelated.detail
    # A policy may anchor trust at the intermediate itself (as Go's x509 path building allows).
    assert check_fixture(pki(roots=INTERMEDIATES, intermediates=())).reason is Reason.VALID
    expired = check_fixture(pki(), now=datetime(2060, 1, 1, tzinfo=UTC))
    assert expired.reason is Reason.UNTRUSTED_CERTIFICATE and "not valid now" in expired.detail


def test_sign_with_a_ca_issued_certificate_and_verify_with_a_policy(
    registry: Registry, repo_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = OpenSSLCA(tmp_path / "ca", "Enterprise Root")
    leaf = ca.issue("release", san="email:release@example.com")
    pushed = push_image(registry, repo_name, simple_image(b"pki\n"), tag="v1")
    ref = f"{registry.host}/{repo_name}:v1"
    sign = ["sign", "--tlog-upload=false", "--key", str(leaf.key_path), "--cert", str(leaf.certificate_path)]
    assert main([*sign, "--cert-chain", str(ca.certificate_path), ref]) == 0
    capsys.readouterr()

    def policy(email: str) -> Path:
        path = tmp_path / f"policy-{email}.yaml"
        path.write_text(
            "version: 1\nauthorities:\n  corp:\n    cosign-pki:\n"
            f"      ca-roots: {ca.certificate_path}\n      subject-email: {email}\n"
            "default:\n  signed-by: [corp]\n"
        )
        return path

    pinned = f"{registry.host}/{repo_name}@{pushed.digest}"
    store = str(tmp_path / "store")
    assert main(["verify", "--policy", str(policy("release@example.com")), "--store", store, pinned]) == 0
    assert main(["verify", "--policy", str(policy("other@example.com")), "--store", store, pinned]) == 3
    other_ca = OpenSSLCA(tmp_path / "other", "Other Root")
    stranger = tmp_path / "stranger.yaml"
    stranger.write_text(
        policy("release@example.com")
        .read_text()
        .replace(str(ca.certificate_path), str(other_ca.certificate_path))
    )
    assert main(["verify", "--policy", str(stranger), "--store", store, pinned]) == 3
    capsys.readouterr()
    # The certificate must be for the signing key.
    wrong = [
        "sign",
        "--tlog-upload=false",
        "--key",
        str(leaf.key_path),
        "--cert",
        str(ca.certificate_path),
        ref,
    ]
    assert main(wrong) == 2 and "not for the signing key" in capsys.readouterr().err


def test_policy_import_maps_pki_to_a_cosign_pki_authority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    containers = tmp_path / "policy.json"
    containers.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        "registry.example.com/team": [
                            {
                                "type": "sigstoreSigned",
                                "pki": {
                                    "caRootsPath": str(FIXTURES / "pki_root_crts.pem"),
                                    "caIntermediatesPath": str(FIXTURES / "pki_intermediate_crts.pem"),
                                    "subjectEmail": EMAIL,
                                    "subjectHostname": HOST,
                                },
                            }
                        ],
                        "registry.example.com/data": [
                            {"type": "sigstoreSigned", "pki": {"caRootsData": "AAAA", "subjectEmail": EMAIL}}
                        ],
                    }
                },
            }
        )
    )
    assert main(["policy", "import", str(containers)]) == 0
    captured = capsys.readouterr()
    document = yaml.safe_load(captured.out)
    assert document["authorities"]["pki"]["cosign-pki"] == {
        "ca-roots": str(FIXTURES / "pki_root_crts.pem"),
        "ca-intermediates": str(FIXTURES / "pki_intermediate_crts.pem"),
        "subject-email": EMAIL,
        "subject-hostname": HOST,
    }
    rules = {rule["scope"]: rule for rule in document["rules"]}
    assert rules["registry.example.com/team"]["signed-by"] == ["pki"]
    assert (
        rules["registry.example.com/data"]["reject"] is True and "caRootsData not converted" in captured.err
    )


def _self_signed() -> tuple[x509.Certificate, ...]:
    from datetime import timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unrelated Root")])
    now = datetime.now(UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (root,)
