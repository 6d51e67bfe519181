"""Revocation of the certificates of a Notary Project chain: OCSP and CRLs, with a disk cache.

What is checked follows the Notary Project revocation specification as notation implements it:

- every certificate of the chain but its self-signed root is checked against its issuer (the next
  certificate of the chain); a certificate that names no OCSP responder and no CRL distribution
  point is "not revocable" and passes;
- OCSP first (the certificate's Authority Information Access URLs); when OCSP gives no answer and
  the certificate also names CRLs, the CRLs decide;
- a response or CRL counts only when the issuing CA signed it (an OCSP response may also be signed
  by a responder certificate the CA issued for `id-kp-OCSPSigning`), it is about this certificate,
  and it is current (`thisUpdate` not in the future, `nextUpdate` not passed);
- delta CRLs are refused (notation does not support them either): a CRL carrying a delta-CRL
  indicator or pointing at a freshest CRL gives no answer;
- with an *authentic* signing time (from a trusted RFC 3161 timestamp), a certificate revoked
  after that time is still good for this signature (OCSP `revocationTime`, CRL `invalidityDate`).

The outcome per certificate is GOOD, REVOKED or UNKNOWN, with a one-line reason. Network and
clock are parameters (`Fetcher`, `now`): the caller decides what they are.

The cache (`STORE/cache/crl/`) holds the raw CRLs and OCSP responses as fetched. Nothing read from
it is trusted: every entry is verified again exactly like a fresh download, and used only while its
`nextUpdate` is ahead. Offline, the cache is the only source, and a missing or stale entry is
UNKNOWN ("could not check revocation").
"""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

from pull.records import dataclass, field
from trust.notation.revocation_settings import configure, configured, current

__all__ = [
    "CertificateStatus",
    "ChainStatus",
    "FetchError",
    "Fetcher",
    "HttpFetcher",
    "RevocationChecker",
    "Status",
    "check_crl",
    "checker",
    "configure",
    "configured",
    "crl_locations",
    "ocsp_locations",
]

DEFAULT_TIMEOUT_SECONDS = 5.0
"""Per request. Notation uses a few seconds too: a responder that is down must not hang a verify."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a thisUpdate may be: responders stamp whole seconds, clocks drift."""
MAX_CRL_BYTES = 16 * 1024 * 1024
MAX_OCSP_BYTES = 64 * 1024
MAX_URLS_PER_CERTIFICATE = 4
"""A hostile certificate may list many URLs; the first few are tried, the rest ignored."""


class Status(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CertificateStatus:
    """The revocation status of one chain certificate, with the reason in one line."""

    subject: str
    status: Status
    detail: str


@dataclass(frozen=True)
class ChainStatus:
    """The statuses of the checked certificates of one chain (leaf first); the worst one decides."""

    certificates: tuple[CertificateStatus, ...] = ()

    @property
    def status(self) -> Status:
        statuses = {entry.status for entry in self.certificates}
        for worst in (Status.REVOKED, Status.UNKNOWN):
            if worst in statuses:
                return worst
        return Status.GOOD

    @property
    def detail(self) -> str:
        """The first certificate with the worst status, in one line."""
        for entry in self.certificates:
            if entry.status is self.status:
                return f"{entry.subject}: {entry.detail}"
        return "no certificate of the chain names a CRL or OCSP responder"


class FetchError(Exception):
    """A CRL or OCSP response could not be fetched (network, HTTP status, size)."""


class Fetcher(Protocol):
    """How bytes come from a revocation URL. `body` given means an OCSP POST."""

    def fetch(self, url: str, body: bytes | None, limit: int) -> bytes: ...


class HttpFetcher:
    """Plain HTTP(S) with a short timeout, a size cap, and a few redirects (CRL hosts often redirect)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout

    def fetch(self, url: str, body: bytes | None, limit: int) -> bytes:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise FetchError(f"{url[:100]} is not an http(s) URL")
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=True, max_redirects=3) as client:
                # One request per connection: some responders (`openssl ocsp` among them) answer an
                # HTTP/1.1 request only once the client says it will not send another.
                if body is None:
                    request = client.build_request("GET", url, headers={"Connection": "close"})
                else:
                    request = client.build_request(
                        "POST",
                        url,
                        content=body,
                        headers={"Content-Type": "application/ocsp-request", "Connection": "close"},
                    )
                response = client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise FetchError(f"{url[:100]} answered HTTP {response.status_code}")
                    data = bytearray()
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) > limit:
                            raise FetchError(f"{url[:100]} sent more than {limit} bytes")
                    return bytes(data)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise FetchError(f"{url[:100]}: {type(exc).__name__} {str(exc)[:100]}") from None


@dataclass
class RevocationChecker:
    """Checks chains; one per verification run (it remembers what it fetched)."""

    cache_dir: Path | None = None
    """`STORE/cache/crl`, or None for no cache."""
    offline: bool = False
    """Use only the cache: never touch the network."""
    fetcher: Fetcher = field(default_factory=HttpFetcher)
    now: datetime | None = None

    def check(
        self, chain: Sequence[x509.Certificate], *, authentic_signing_time: datetime | None = None
    ) -> ChainStatus:
        """The revocation status of every certificate of `chain` (leaf first) but its root."""
        moment = self.now or datetime.now(UTC)
        results = []
        for position in range(len(chain) - 1):
            certificate, issuer = chain[position], chain[position + 1]
            results.append(self._check_one(certificate, issuer, moment, authentic_signing_time))
        return ChainStatus(tuple(entry for entry in results if entry is not None))

    def _check_one(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        now: datetime,
        signing_time: datetime | None,
    ) -> CertificateStatus | None:
        subject = _describe(certificate)
        ocsp_urls = ocsp_locations(certificate)
        crl_urls = crl_locations(certificate)
        if not ocsp_urls and not crl_urls:
            return None
        problems: list[str] = []
        if ocsp_urls:
            answer = self._ocsp(certificate, issuer, ocsp_urls, now, signing_time, problems)
            if answer is not None:
                return CertificateStatus(subject, *answer)
        if crl_urls:
            answer = self._crl(certificate, issuer, crl_urls, now, signing_time, problems)
            if answer is not None:
                return CertificateStatus(subject, *answer)
        prefix = "could not check revocation"
        return CertificateStatus(subject, Status.UNKNOWN, f"{prefix}: {'; '.join(problems)}")

    # --- OCSP --------------------------------------------------------------------------------

    def _ocsp(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        urls: Sequence[str],
        now: datetime,
        signing_time: datetime | None,
        problems: list[str],
    ) -> tuple[Status, str] | None:
        request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
        for url in urls:
            key = f"ocsp\0{url}\0{certificate.serial_number}\0{request.issuer_key_hash.hex()}"
            cached = self._cached(key)
            data = None
            if cached is not None:
                try:
                    response = _check_ocsp_response(cached, request, issuer, now)
                    status, detail = _ocsp_status(response, url, signing_time)
                    if status is not Status.UNKNOWN:
                        return status, detail
                    problems.append(detail)
                    continue
                except OcspProblem as exc:
                    if self.offline:
                        problems.append(f"cached OCSP response of {url[:100]} {exc}")
                        continue
            elif self.offline:
                problems.append(f"offline and no cached OCSP response of {url[:100]}")
                continue
            try:
                data = self.fetcher.fetch(
                    url, request.public_bytes(serialization.Encoding.DER), MAX_OCSP_BYTES
                )
                response = _check_ocsp_response(data, request, issuer, now)
            except FetchError as exc:
                problems.append(f"OCSP {exc}")
                continue
            except OcspProblem as exc:
                problems.append(f"OCSP response of {url[:100]} {exc}")
                continue
            if response.next_update_utc is not None:
                self._store(key, data)
            status, detail = _ocsp_status(response, url, signing_time)
            if status is not Status.UNKNOWN:
                return status, detail
            problems.append(detail)  # "unknown" from a responder: the CRLs, if any, may know
        return None

    # --- CRL ---------------------------------------------------------------------------------

    def _crl(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        urls: Sequence[str],
        now: datetime,
        signing_time: datetime | None,
        problems: list[str],
    ) -> tuple[Status, str] | None:
        for url in urls:
            key = f"crl\0{url}"
            cached = self._cached(key)
            crl: x509.CertificateRevocationList | None = None
            if cached is not None:
                try:
                    crl = check_crl(cached, issuer, now)
                except CrlProblem as exc:
                    if self.offline:
                        problems.append(f"cached CRL {url[:100]} {exc}")
                        continue
            elif self.offline:
                problems.append(f"offline and no cached CRL {url[:100]}")
                continue
            if crl is None:
                try:
                    data = self.fetcher.fetch(url, None, MAX_CRL_BYTES)
                    crl = check_crl(data, issuer, now)
                except FetchError as exc:
                    problems.append(f"CRL {exc}")
                    continue
                except CrlProblem as exc:
                    problems.append(f"CRL {url[:100]} {exc}")
                    continue
                self._store(key, data)
            return _crl_status(crl, certificate, url, signing_time)
        return None

    # --- cache -------------------------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / hashlib.sha256(key.encode()).hexdigest()

    def _cached(self, key: str) -> bytes | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read(MAX_CRL_BYTES + 1)
        except OSError:
            return None

    def _store(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except OSError:
            pass  # a cache that cannot be written only costs a download next time


def checker(now: datetime | None = None) -> RevocationChecker:
    """A checker with the configured cache and mode (`revocation_settings`), judging freshness at `now`."""
    settings = current()
    return RevocationChecker(cache_dir=settings.cache_dir, offline=settings.offline, now=now)


# --- pure checks -----------------------------------------------------------------------------


class OcspProblem(ValueError):
    """An OCSP response that cannot be used (malformed, wrong signer, not about this certificate, stale)."""


class CrlProblem(ValueError):
    """A CRL that cannot be used (malformed, wrong issuer or signature, stale, delta CRL)."""


def ocsp_locations(certificate: x509.Certificate) -> list[str]:
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    urls = [
        description.access_location.value
        for description in access.value
        if description.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(description.access_location, x509.UniformResourceIdentifier)
    ]
    return urls[:MAX_URLS_PER_CERTIFICATE]


def crl_locations(certificate: x509.Certificate) -> list[str]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return []
    urls = []
    for point in points.value:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                urls.append(name.value)
    return urls[:MAX_URLS_PER_CERTIFICATE]


def check_crl(data: bytes, issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList:
    """Parse a DER (or PEM) CRL and check that `issuer` signed it and it is current. Raises `CrlProblem`."""
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
        extensions = crl.extensions
        oids = {extension.oid for extension in extensions}
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CrlProblem(f"is not a readable CRL ({str(exc)[:80]})") from None
    if ExtensionOID.DELTA_CRL_INDICATOR in oids or ExtensionOID.FRESHEST_CRL in oids:
        raise CrlProblem("is or points to a delta CRL, which is not supported (as in notation)")
    known = {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    }
    for extension in extensions:
        if extension.critical and extension.oid not in known:
            raise CrlProblem(f"has an unsupported critical extension {extension.oid.dotted_string}")
    if crl.issuer != issuer.subject:
        raise CrlProblem(
            f"was issued by {crl.issuer.rfc4514_string()[:100]}, not by the certificate's issuer"
        )
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.crl_sign:
            raise CrlProblem("is signed by a CA whose key usage does not include cRLSign")
    except x509.ExtensionNotFound:
        pass
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CrlProblem("is not signed by the certificate's issuer")
    if crl.last_update_utc > now + CLOCK_SKEW:
        raise CrlProblem(f"is not valid before {crl.last_update_utc.isoformat()}")
    if crl.next_update_utc is None:
        raise CrlProblem("has no nextUpdate")
    if crl.next_update_utc < now:
        raise CrlProblem(f"is stale (nextUpdate {crl.next_update_utc.isoformat()})")
    return crl


def _crl_status(
    crl: x509.CertificateRevocationList,
    certificate: x509.Certificate,
    url: str,
    signing_time: datetime | None,
) -> tuple[Status, str]:
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    if entry is None:
        return Status.GOOD, f"not revoked (CRL {url[:100]})"
    try:
        invalid_since = entry.extensions.get_extension_for_class(
            x509.InvalidityDate
        ).value.invalidity_date_utc
    except (x509.ExtensionNotFound, ValueError):
        invalid_since = None
    if signing_time is not None and invalid_since is not None and signing_time < invalid_since:
        return Status.GOOD, (
            f"revoked, but invalid only since {invalid_since.isoformat()}, after the timestamped signing time"
        )
    return Status.REVOKED, f"revoked at {entry.revocation_date_utc.isoformat()} (CRL {url[:100]})"


def _check_ocsp_response(
    data: bytes, request: ocsp.OCSPRequest, issuer: x509.Certificate, now: datetime
) -> ocsp.OCSPResponse:
    """Parse and check an OCSP response for the one certificate of `request`. Raises `OcspProblem`."""
    try:
        response = ocsp.load_der_ocsp_response(data)
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise OcspProblem(f"says {response.response_status.name.lower()}")
        singles = list(response.responses)
        this_update, next_update = response.this_update_utc, response.next_update_utc
        signature, tbs = response.signature, response.tbs_response_bytes
        hash_algorithm = response.signature_hash_algorithm
        embedded = list(response.certificates)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OcspProblem(f"is not readable ({str(exc)[:80]})") from None
    if len(singles) != 1:
        raise OcspProblem(f"holds {len(singles)} answers, not one")
    single = singles[0]
    if (
        single.serial_number != request.serial_number
        or not isinstance(single.hash_algorithm, hashes.SHA1)
        or single.issuer_key_hash != request.issuer_key_hash
        or single.issuer_name_hash != request.issuer_name_hash
    ):
        raise OcspProblem("is about another certificate")
    signer = _ocsp_signer(response, issuer, embedded, now)
    if not _signature_valid(signer.public_key(), signature, tbs, hash_algorithm):
        raise OcspProblem("is not signed by the issuing CA or its OCSP responder")
    if this_update > now + CLOCK_SKEW:
        raise OcspProblem(f"is not valid before {this_update.isoformat()}")
    if next_update is not None and next_update < now:
        raise OcspProblem(f"is stale (nextUpdate {next_update.isoformat()})")
    return response


def _ocsp_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, embedded: Sequence[x509.Certificate], now: datetime
) -> x509.Certificate:
    """The issuing CA itself, or a responder certificate it issued for OCSP signing."""
    if _responder_is(response, issuer):
        return issuer
    for candidate in embedded:
        if not _responder_is(response, candidate):
            continue
        try:
            candidate.verify_directly_issued_by(issuer)
            usage = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage and (
            candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc
        ):
            return candidate
    raise OcspProblem("is signed by neither the issuing CA nor a responder it authorised")


def _responder_is(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return bool(response.responder_name == certificate.subject)
    key_hash = response.responder_key_hash
    if key_hash is None:
        return False
    return hashlib.sha1(_public_key_bits(certificate)).digest() == key_hash


def _public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what OCSP key hashes are taken of)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }:
    # skip the outer header, then the algorithm, then the BIT STRING header and its unused-bits byte.
    position = _skip_header(spki, 0)
    position = _skip_element(spki, position)
    return spki[_skip_header(spki, position) + 1 :]


def _skip_header(der: bytes, position: int) -> int:
    length = der[position + 1]
    return position + 2 + (length & 0x7F if length & 0x80 else 0)


def _skip_element(der: bytes, position: int) -> int:
    first = der[position + 1]
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(der[position + 2 : position + 2 + count], "big")
        return position + 2 + count + length
    return position + 2 + first


def _signature_valid(
    key: object, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None
) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _ocsp_status(response: ocsp.OCSPResponse, url: str, signing_time: datetime | None) -> tuple[Status, str]:
    status = response.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return Status.GOOD, f"good (OCSP {url[:100]})"
    if status == ocsp.OCSPCertStatus.REVOKED:
        revoked_at = response.revocation_time_utc
        if signing_time is not None and revoked_at is not None and signing_time < revoked_at:
            return Status.GOOD, f"revoked at {revoked_at.isoformat()}, after the timestamped signing time"
        when = f" at {revoked_at.isoformat()}" if revoked_at is not None else ""
        return Status.REVOKED, f"revoked{when} (OCSP {url[:100]})"
    return Status.UNKNOWN, f"the OCSP responder {url[:100]} does not know the certificate"


def _describe(certificate: x509.Certificate) -> str:
    text = certificate.subject.rfc4514_string() or "(empty subject)"
    return text if len(text) <= 200 else text[:200] + "…"
