"""Cosign signatures made with a key whose certificate an enterprise CA issued ("your own PKI").

The `.sig` layer carries the signing certificate (`dev.sigstore.cosign/certificate`, PEM) and its
chain (`dev.sigstore.cosign/chain`, PEM, leaf's issuer first, the root last). It is trusted as
containers/image trusts a `pki` requirement (podman's `sigstoreSigned` with `pki`), with no Fulcio,
SCT or Rekor:

- the chain's certificates but its last (the root a signer supplies is never trusted) join the
  intermediates the policy lists, and a path must lead from the certificate through them to one of
  the policy's CA roots, each link signed by the next, each CA a CA (basicConstraints cA), every
  certificate valid now;
- the certificate, if it has an extended key usage, must allow code signing;
- `subject-email` must be one of its email SANs, `subject-hostname` match one of its DNS SANs
  (at least one of the two is required, as in containers/image);
- then the signature must verify with the certificate's key, exactly as for a key authority.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID

from pull.digest import Digest
from pull.records import replace
from pull.reference import Reference
from trust.cosign.authority import CosignPkiAuthority
from trust.cosign.simple_signing import (
    PayloadLoader,
    Reason,
    SignatureLayer,
    SignatureOutcome,
    verify_simple_signing,
)
from trust.errors import KeyLoadError
from trust.keys.keyfiles import TrustedKey, check_public_key

MAX_PATH_LENGTH = 6
MAX_CHAIN_CERTIFICATES = 10


class PkiProblem(ValueError):
    """The certificate does not lead to a trusted CA, or names another subject (one line)."""


def verify_certificate(
    certificate_pem: str,
    chain_pem: str | None,
    authority: CosignPkiAuthority,
    now: datetime,
) -> x509.Certificate:
    """The leaf certificate, once it chains to the authority's roots and names its subject."""
    try:
        leaf = x509.load_pem_x509_certificate(certificate_pem.encode("utf-8", "replace"))
        supplied = x509.load_pem_x509_certificates(chain_pem.encode("utf-8", "replace")) if chain_pem else []
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiProblem(f"the layer's certificate or chain is not PEM X.509 ({str(exc)[:80]})") from None
    if len(supplied) > MAX_CHAIN_CERTIFICATES:
        raise PkiProblem(f"the certificate chain holds more than {MAX_CHAIN_CERTIFICATES} certificates")
    intermediates = [*authority.intermediates, *supplied[:-1]]
    _check_leaf(leaf, now)
    _build_path(leaf, intermediates, authority.roots, now)
    _check_subject(leaf, authority)
    return leaf


def _check_leaf(leaf: x509.Certificate, now: datetime) -> None:
    _check_valid(leaf, now)
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if (
        ExtendedKeyUsageOID.CODE_SIGNING not in usage
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage
    ):
        raise PkiProblem(f"certificate {_name(leaf)} is not for code signing (extended key usage)")


def _build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    current = leaf
    used: list[x509.Certificate] = []
    for _ in range(MAX_PATH_LENGTH):
        for root in roots:
            if root.subject == current.issuer and _issued_by(current, root):
                _check_valid(root, now)
                return
        step = next(
            (
                candidate
                for candidate in intermediates
                if candidate not in used
                and candidate.subject == current.issuer
                and _is_ca(candidate)
                and _issued_by(current, candidate)
            ),
            None,
        )
        if step is None:
            break
        _check_valid(step, now)
        used.append(step)
        current = step
    raise PkiProblem(f"certificate {_name(leaf)} does not chain to a CA root of the authority")


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_valid(certificate: x509.Certificate, now: datetime) -> None:
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise PkiProblem(
            f"certificate {_name(certificate)} is not valid now (valid "
            f"{certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()})"
        )


def _check_subject(leaf: x509.Certificate, authority: CosignPkiAuthority) -> None:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = names.get_values_for_type(x509.RFC822Name)
        hosts = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        emails, hosts = [], []
    if authority.subject_email is not None and authority.subject_email not in emails:
        raise PkiProblem(f"certificate {_name(leaf)} is not for {authority.subject_email} (has {emails[:5]})")
    if authority.subject_hostname is not None and not any(
        _host_matches(pattern, authority.subject_hostname) for pattern in hosts
    ):
        raise PkiProblem(f"certificate {_name(leaf)} is not for host {authority.subject_hostname}")


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()[:200] or "(empty subject)"


def verify_pki_layers(
    layers: Sequence[SignatureLayer],
    loader: PayloadLoader,
    expected: Digest,
    repository: str | Reference,
    authority: CosignPkiAuthority,
    *,
    ignore_reference: bool = False,
    now: datetime | None = None,
) -> list[SignatureOutcome]:
    """One outcome per simple-signing layer: its certificate judged by the authority, then its
    signature checked with the certificate's key."""
    moment = now or datetime.now(UTC)
    outcomes = []
    for index, layer in enumerate(layers):
        if not layer.certificate:
            outcomes.append(
                SignatureOutcome(
                    index, layer.digest, Reason.UNTRUSTED_CERTIFICATE, "the layer carries no certificate"
                )
            )
            continue
        try:
            leaf = verify_certificate(layer.certificate, layer.chain, authority, moment)
            key = TrustedKey(
                f"{authority.name}:{_name(leaf)}", check_public_key(leaf.public_key(), _name(leaf))
            )
        except PkiProblem as exc:
            outcomes.append(SignatureOutcome(index, layer.digest, Reason.UNTRUSTED_CERTIFICATE, str(exc)))
            continue
        except KeyLoadError as exc:  # a key type or size cosign does not use
            outcomes.append(
                SignatureOutcome(index, layer.digest, Reason.UNTRUSTED_CERTIFICATE, str(exc)[:200])
            )
            continue
        [outcome] = verify_simple_signing(
            [layer], loader, expected, repository, [key], ignore_reference=ignore_reference
        )
        outcomes.append(replace(outcome, index=index))
    return outcomes
