"""Challenge parsing and the Bearer/Basic flows of pull.auth, with a fake token service (no network)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pull import auth
from pull.auth import Authenticator, Challenge, parse_www_authenticate, repository_scope
from pull.credentials import Credential, CredentialStore
from pull.errors import AuthError

# -- parsing ------------------------------------------------------------------------------------------


def test_parses_docker_hub_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert parse_www_authenticate(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        )
    ]


def test_quoted_values_keep_commas_and_escapes() -> None:
    (challenge,) = parse_www_authenticate(
        r'Bearer realm="https://a/token", scope="repository:x:pull,push", error="say \"no\""'
    )
    assert challenge.params["scope"] == "repository:x:pull,push"
    assert challenge.params["error"] == 'say "no"'


def test_several_challenges_in_one_header_and_across_headers() -> None:
    challenges = parse_www_authenticate(
        ['Basic realm="Registry Realm", Bearer realm="https://t/token",service=s', "Negotiate"]
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate"]
    assert challenges[0].params == {"realm": "Registry Realm"}
    assert challenges[1].params == {"realm": "https://t/token", "service": "s"}


def test_scheme_and_parameter_names_are_case_insensitive_and_unquoted_urls_survive() -> None:
    (challenge,) = parse_www_authenticate("BEARER Realm=https://auth.example/token?x=1 , SERVICE = reg")
    assert challenge == Challenge("bearer", {"realm": "https://auth.example/token?x=1", "service": "reg"})


@pytest.mark.parametrize(
    "garbage",
    ["", ",,,", '"', '=="', "Bearer realm=", 'Bearer realm="unterminated', "\x00\x01 ü =", "Basic dGVzdA=="],
)
def test_garbage_never_raises(garbage: str) -> None:
    challenges = parse_www_authenticate(garbage)
    assert all(c.scheme for c in challenges)


def test_unterminated_quote_takes_the_rest() -> None:
    (challenge,) = parse_www_authenticate('Bearer realm="https://a/token')
    assert challenge.params["realm"] == "https://a/token"


def test_repository_scope() -> None:
    assert repository_scope("team/app") == "repository:team/app:pull"
    assert repository_scope("team/app", push=True) == "repository:team/app:pull,push"


# -- a fake token service -----------------------------------------------------------------------------

REALM = "https://auth.example/token"
BEARER = [f'Bearer realm="{REALM}",service="registry.example",scope="repository:app:pull"']


class FakeTokenService:
    """Stands in for RegistryClient._token_request; answers with `replies` in turn."""

    def __init__(self, *replies: tuple[int, object]) -> None:
        self.replies = list(replies) or [(200, {"token": "t1", "expires_in": 300})]
        self.calls: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        self.calls.append((method, url, dict(headers), body))
        status, answer = self.replies[min(len(self.calls), len(self.replies)) - 1]
        return status, answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    def query(self, call: int = -1) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.calls[call][1]).query)


class CountingStore(CredentialStore):
    def __init__(self, credential: Credential | None) -> None:
        super().__init__(Path("/nonexistent/config.json"), extra_auth_files=())
        self.credential = credential
        self.lookups: list[str] = []

    def lookup(self, registry: str) -> Credential | None:
        self.lookups.append(registry)
        return self.credential


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(auth, "_clock", lambda: now[0])
    return now


# -- Authenticator ----------------------------------------------------------------------------------


def test_anonymous_until_challenged_and_credentials_looked_up_lazily() -> None:
    store = CountingStore(Credential("alice", "pw"))
    authenticator = Authenticator("registry.example", store, FakeTokenService())
    assert authenticator.authorization("repository:app:pull") is None
    assert store.lookups == []  # an anonymous registry never runs a credential helper


def test_basic_challenge_sends_credentials_from_then_on() -> None:
    store = CountingStore(Credential("alice", "pw"))
    authenticator = Authenticator("registry.example", store, FakeTokenService())
    authenticator.challenged(['Basic realm="Registry Realm"'], "repository:app:pull", "registry.example/app")
    assert authenticator.authorization("repository:app:pull") == basic("alice", "pw")
    assert authenticator.authorization("repository:other:pull") == basic("alice", "pw")
    assert authenticator.sent_credentials
    assert store.lookups == ["registry.example"]  # looked up once


def test_basic_challenge_without_credentials_says_how_to_log_in() -> None:
    authenticator = Authenticator("registry.example", CountingStore(None), FakeTokenService())
    with pytest.raises(AuthError, match=r"registry.example/app .*trust login registry.example"):
        authenticator.challenged(['Basic realm="r"'], "repository:app:pull", "registry.example/app")


def test_unknown_scheme_is_refused_with_its_name() -> None:
    authenticator = Authenticator("registry.example", None, FakeTokenService())
    with pytest.raises(AuthError, match="negotiate"):
        authenticator.challenged(["Negotiate"], None, "registry.example")
    with pytest.raises(AuthError, match="no challenge"):
        authenticator.challenged([], None, "registry.example")


def test_bearer_without_realm_is_refused() -> None:
    authenticator = Authenticator("registry.example", None, FakeTokenService())
    with pytest.raises(AuthError, match="without a realm"):
        authenticator.challenged(['Bearer service="x"'], None, "registry.example")


def test_bearer_anonymous_token_request() -> None:
    service = FakeTokenService()
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")
    assert authenticator.authorization("repository:app:pull") == "Bearer t1"
    method, url, headers, body = service.calls[0]
    assert (method, body) == ("GET", None)
    assert url.startswith(REALM + "?")
    assert "Authorization" not in headers
    assert service.query() == {"service": ["registry.example"], "scope": ["repository:app:pull"]}
    assert not authenticator.sent_credentials


def test_bearer_token_request_carries_basic_credentials() -> None:
    service = FakeTokenService()
    authenticator = Authenticator("registry.example", CountingStore(Credential("alice", "pw")), service)
    authenticator.challenged(BEARER, "repository:app:pull,push", "registry.example/app")
    authenticator.authorization("repository:app:pull,push")
    assert service.calls[0][2]["Authorization"] == basic("alice", "pw")
    assert service.query()["scope"] == ["repository:app:pull,push"]  # our scope, not the challenge's
    assert authenticator.sent_credentials


def test_realm_query_is_preserved() -> None:
    service = FakeTokenService()
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged([f'Bearer realm="{REALM}?tenant=7",service="s"'], None, "registry.example")
    authenticator.authorization(None)
    assert service.query() == {"tenant": ["7"], "service": ["s"]}


def test_challenge_scope_is_used_when_we_have_none() -> None:
    service = FakeTokenService()
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, None, "registry.example")
    authenticator.authorization(None)
    assert service.query()["scope"] == ["repository:app:pull"]


def test_access_token_is_accepted() -> None:
    service = FakeTokenService((200, {"access_token": "oauth-token"}))
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, None, "registry.example")
    assert authenticator.authorization(None) == "Bearer oauth-token"


def test_tokens_are_cached_per_scope(clock: list[float]) -> None:
    service = FakeTokenService(
        (200, {"token": "a", "expires_in": 300}), (200, {"token": "b", "expires_in": 300})
    )
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")
    assert authenticator.authorization("repository:app:pull") == "Bearer a"
    assert authenticator.authorization("repository:app:pull") == "Bearer a"
    assert authenticator.authorization("repository:other:pull") == "Bearer b"
    assert len(service.calls) == 2


def test_tokens_are_renewed_before_expires_in(clock: list[float]) -> None:
    service = FakeTokenService(
        (200, {"token": "a", "expires_in": 100}), (200, {"token": "b", "expires_in": 100})
    )
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, None, "registry.example")
    assert authenticator.authorization(None) == "Bearer a"
    clock[0] += 80
    assert authenticator.authorization(None) == "Bearer a"
    clock[0] += 15  # 95 s: within the last 10% of the lifetime
    assert authenticator.authorization(None) == "Bearer b"


def test_missing_expires_in_means_sixty_seconds(clock: list[float]) -> None:
    service = FakeTokenService((200, {"token": "a"}), (200, {"token": "b", "expires_in": "soon"}))
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, None, "registry.example")
    authenticator.authorization(None)
    clock[0] += 50
    assert authenticator.authorization(None) == "Bearer a"
    clock[0] += 10
    assert authenticator.authorization(None) == "Bearer b"


def test_a_new_challenge_drops_the_refused_token() -> None:
    service = FakeTokenService((200, {"token": "a"}), (200, {"token": "b"}))
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")
    assert authenticator.authorization("repository:app:pull") == "Bearer a"
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")  # token refused
    assert authenticator.authorization("repository:app:pull") == "Bearer b"


def test_identity_token_is_exchanged_by_oauth2_post() -> None:
    service = FakeTokenService((200, {"access_token": "fresh"}))
    store = CountingStore(Credential("", identity_token="refresh-me"))
    authenticator = Authenticator("registry.example", store, service)
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")
    assert authenticator.authorization("repository:app:pull") == "Bearer fresh"
    method, url, headers, body = service.calls[0]
    assert (method, url) == ("POST", REALM)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in headers
    assert body is not None
    assert parse_qs(body.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-me"],
        "service": ["registry.example"],
        "scope": ["repository:app:pull"],
        "client_id": ["trust"],
    }


@pytest.mark.parametrize(
    ("credential", "said"),
    [(Credential("alice", "wrong"), "credentials were sent"), (None, "no credentials configured")],
)
def test_token_service_refusal_says_whether_credentials_were_sent(
    credential: Credential | None, said: str
) -> None:
    service = FakeTokenService((401, {"errors": []}))
    authenticator = Authenticator("registry.example", CountingStore(credential), service)
    authenticator.challenged(BEARER, "repository:app:pull", "registry.example/app")
    with pytest.raises(AuthError, match=said) as caught:
        authenticator.authorization("repository:app:pull")
    message = str(caught.value)
    assert "auth.example" in message and "registry.example" in message and "repository:app:pull" in message
    assert caught.value.status_code == 401
    assert "wrong" not in message


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ((500, b"oops"), "answered 500"),
        ((200, b"not json"), "malformed JSON"),
        ((200, {"token": ""}), "no usable token"),
        ((200, {"token": "a\r\nX-Injected: 1"}), "no usable token"),
        ((200, {"token": 7}), "no usable token"),
        ((200, [1, 2]), "malformed JSON"),
    ],
)
def test_bad_token_answers_are_auth_errors(reply: tuple[int, object], match: str) -> None:
    authenticator = Authenticator("registry.example", None, FakeTokenService(reply))
    authenticator.challenged(BEARER, None, "registry.example")
    with pytest.raises(AuthError, match=match):
        authenticator.authorization(None)


@pytest.mark.parametrize("realm", ["ftp://auth.example/token", "/relative/token", "https:///no-host"])
def test_invalid_realm_is_refused_before_any_request(realm: str) -> None:
    service = FakeTokenService()
    authenticator = Authenticator("registry.example", None, service)
    authenticator.challenged([f'Bearer realm="{realm}"'], None, "registry.example")
    with pytest.raises(AuthError, match="invalid token service realm"):
        authenticator.authorization(None)
    assert service.calls == []
