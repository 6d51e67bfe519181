"""pull.credentials: Docker config.json lookups, credential helpers (a fake one on PATH), login storage."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from pull.credentials import DOCKER_HUB_KEY, Credential, CredentialStore, default_config_path, server_key
from pull.errors import AuthError, UsageError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "docker" / "config.json"


def store_for(config: Path, **kwargs: object) -> CredentialStore:
    return CredentialStore(config, extra_auth_files=(), **kwargs)  # type: ignore[arg-type]


# -- where the config lives -----------------------------------------------------------------------------


def test_docker_config_env_names_the_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    assert default_config_path() == tmp_path / "cfg" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_path() == tmp_path / ".docker" / "config.json"


def test_default_store_reads_docker_config_then_registry_auth_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_config(tmp_path / "cfg" / "config.json", {"auths": {"a.example": {"auth": b64("docker:1")}}})
    containers = write_config(
        tmp_path / "auth.json",
        {"auths": {"a.example": {"auth": b64("podman:2")}, "b.example": {"auth": b64("podman:3")}}},
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(containers))
    store = CredentialStore()
    assert store.lookup("a.example") == Credential("docker", "1")  # Docker's file first
    assert store.lookup("b.example") == Credential("podman", "3")
    assert store.lookup("c.example") is None


# -- auths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "registry.example:5000",
        "https://registry.example:5000/v1/",
        "http://registry.example:5000",
        "REGISTRY.example:5000",
    ],
)
def test_auths_keys_in_every_spelling(config: Path, key: str) -> None:
    write_config(config, {"auths": {key: {"auth": b64("alice:pa:ss")}}})
    assert store_for(config).lookup("registry.example:5000") == Credential("alice", "pa:ss")
    assert store_for(config).lookup("registry.example") is None  # the port is part of the name


def test_username_and_password_fields(config: Path) -> None:
    write_config(config, {"auths": {"r.example": {"username": "bob", "password": "pw"}}})
    assert store_for(config).lookup("r.example") == Credential("bob", "pw")


def test_identity_token(config: Path) -> None:
    write_config(config, {"auths": {"r.example": {"auth": b64("<token>:"), "identitytoken": "refresh"}}})
    found = store_for(config).lookup("r.example")
    assert found is not None and found.identity_token == "refresh"


@pytest.mark.parametrize("name", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_names_map_to_the_index_key(config: Path, name: str) -> None:
    write_config(config, {"auths": {DOCKER_HUB_KEY: {"auth": b64("hubuser:pw")}}})
    assert store_for(config).lookup(name) == Credential("hubuser", "pw")
    assert server_key(name) == DOCKER_HUB_KEY


def test_empty_entries_and_missing_file_mean_no_credentials(config: Path) -> None:
    assert store_for(config).lookup("r.example") is None
    write_config(config, {"auths": {"r.example": {}}})
    assert store_for(config).lookup("r.example") is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"auths": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),  # RecursionError
        (json.dumps({"auths": {"r.example": {"auth": "***"}}}), "not valid base64"),
        (json.dumps({"auths": {"r.example": {"auth": b64("nocolon")}}}), "user:password"),
    ],
)
def test_malformed_config_is_a_usage_error_naming_the_file(config: Path, content: str, match: str) -> None:
    config.parent.mkdir(parents=True)
    config.write_text(content)
    with pytest.raises(UsageError, match=match) as caught:
        store_for(config).lookup("r.example")
    assert str(config) in str(caught.value)


def test_credential_repr_hides_secrets() -> None:
    text = repr(Credential("alice", "hunter2", identity_token="tok-secret"))
    assert "alice" in text and "hunter2" not in text and "tok-secret" not in text


# -- credential helpers ---------------------------------------------------------------------------------

FAKE_HELPER = """#!/bin/sh
# A fake Docker credential helper: logs its action and stdin, answers from $FAKE_HELPER_ANSWER.
input=$(cat)
printf '%s %s\\n' "$1" "$input" >> "$FAKE_HELPER_LOG"
case "$1" in
  get)
    case "$input" in
      *missing*) echo "credentials not found in native keychain"; exit 1 ;;
      *broken*) echo "keychain is locked" >&2; exit 3 ;;
      *slow*) sleep 5 ;;
    esac
    printf '%s' "$FAKE_HELPER_ANSWER" ;;
  store|erase) exit 0 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts `docker-credential-test` on PATH; returns its log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-test"
    script.write_text(FAKE_HELPER)
    script.chmod(0o755)
    log = tmp_path / "helper.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_HELPER_LOG", str(log))
    monkeypatch.setenv(
        "FAKE_HELPER_ANSWER", json.dumps({"ServerURL": "x", "Username": "helped", "Secret": "s3"})
    )
    return log


def test_cred_helper_for_a_host(config: Path, helper: Path) -> None:
    write_config(
        config,
        {"credHelpers": {"r.example:5000": "test"}, "auths": {"r.example:5000": {"auth": b64("file:pw")}}},
    )
    assert store_for(config).lookup("r.example:5000") == Credential("helped", "s3")
    assert helper.read_text() == "get r.example:5000\n"


def test_creds_store_gets_docker_hub_server_url(config: Path, helper: Path) -> None:
    write_config(config, {"credsStore": "test"})
    assert store_for(config).lookup("registry-1.docker.io") == Credential("helped", "s3")
    assert helper.read_text() == f"get {DOCKER_HUB_KEY}\n"


def test_cred_helpers_win_over_creds_store(config: Path, helper: Path, tmp_path: Path) -> None:
    write_config(config, {"credsStore": "absent-helper", "credHelpers": {"r.example": "test"}})
    assert store_for(config).lookup("r.example") == Credential("helped", "s3")


def test_helper_token_username_means_identity_token(
    config: Path, helper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HELPER_ANSWER", json.dumps({"Username": "<token>", "Secret": "refresh"}))
    write_config(config, {"credsStore": "test"})
    found = store_for(config).lookup("r.example")
    assert found is not None and found.identity_token == "refresh" and found.password == ""


def test_helper_not_found_falls_back_to_auths(config: Path, helper: Path) -> None:
    write_config(config, {"credsStore": "test", "auths": {"missing.example": {"auth": b64("file:pw")}}})
    assert store_for(config).lookup("missing.example") == Credential("file", "pw")
    assert store_for(config).lookup("missing.example:1") is None


def test_missing_helper_program_is_a_clear_auth_error(config: Path, helper: Path) -> None:
    write_config(config, {"credHelpers": {"r.example": "nonexistent"}})
    with pytest.raises(AuthError, match=r"docker-credential-nonexistent .*not found on PATH") as caught:
        store_for(config).lookup("r.example")
    assert str(config) in str(caught.value)


def test_failing_helper_reports_its_message(config: Path, helper: Path) -> None:
    write_config(config, {"credsStore": "test"})
    with pytest.raises(
        AuthError, match=r"docker-credential-test failed .*broken\.example: keychain is locked"
    ):
        store_for(config).lookup("broken.example")


def test_helper_timeout(config: Path, helper: Path) -> None:
    write_config(config, {"credsStore": "test"})
    with pytest.raises(AuthError, match=r"did not answer within 0\.3s"):
        store_for(config, helper_timeout=0.3).lookup("slow.example")


def test_helper_with_malformed_output(config: Path, helper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HELPER_ANSWER", "{not json")
    write_config(config, {"credsStore": "test"})
    with pytest.raises(AuthError, match="malformed output"):
        store_for(config).lookup("r.example")


@pytest.mark.parametrize("name", ["../../bin/sh", "-rf", "a b"])
def test_helper_names_cannot_be_paths_or_options(config: Path, name: str) -> None:
    write_config(config, {"credsStore": name})
    with pytest.raises(UsageError, match="invalid credential helper name"):
        store_for(config).lookup("r.example")


# -- storing logins ---------------------------------------------------------------------------------


def test_store_login_writes_auths_atomically_owner_only(config: Path) -> None:
    write_config(config, {"auths": {"other.example": {"auth": b64("o:p")}}, "psFormat": "table"})
    config.chmod(0o644)
    store_for(config).store_login("r.example:5000", "alice", "pw")
    document = json.loads(config.read_text())
    assert document["psFormat"] == "table"  # unrelated settings survive
    assert document["auths"]["r.example:5000"] == {"auth": b64("alice:pw")}
    assert document["auths"]["other.example"] == {"auth": b64("o:p")}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json"]  # no temp file left
    assert store_for(config).lookup("r.example:5000") == Credential("alice", "pw")


def test_store_login_creates_private_directory_and_uses_hub_key(tmp_path: Path) -> None:
    config = tmp_path / "new" / "config.json"
    store_for(config).store_login("docker.io", "hubuser", "pw")
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert list(json.loads(config.read_text())["auths"]) == [DOCKER_HUB_KEY]


def test_store_login_replaces_aliases(config: Path) -> None:
    write_config(config, {"auths": {"https://r.example/v1/": {"auth": b64("old:pw")}}})
    store_for(config).store_login("r.example", "new", "pw2")
    assert json.loads(config.read_text())["auths"] == {"r.example": {"auth": b64("new:pw2")}}


def test_store_login_keeps_a_symlinked_config(config: Path, tmp_path: Path) -> None:
    real = write_config(tmp_path / "dotfiles" / "docker.json", {})
    config.parent.mkdir(parents=True)
    config.symlink_to(real)
    store_for(config).store_login("r.example", "alice", "pw")
    assert config.is_symlink()
    assert "r.example" in json.loads(real.read_text())["auths"]


def test_store_login_uses_the_configured_helper(config: Path, helper: Path) -> None:
    write_config(config, {"credHelpers": {"r.example": "test"}})
    store_for(config).store_login("r.example", "alice", "pw")
    action, _, payload = helper.read_text().strip().partition(" ")
    assert action == "store"
    assert json.loads(payload) == {"ServerURL": "r.example", "Username": "alice", "Secret": "pw"}
    assert "auths" not in json.loads(config.read_text())  # the password never touched the file


def test_store_login_refuses_colon_in_username(config: Path) -> None:
    with pytest.raises(UsageError):
        store_for(config).store_login("r.example", "a:b", "pw")


def test_remove_login(config: Path, helper: Path) -> None:
    write_config(
        config, {"auths": {"r.example": {"auth": b64("a:b")}, "http://r.example": {}, "k.example": {}}}
    )
    assert store_for(config).remove_login("r.example") is True
    assert json.loads(config.read_text())["auths"] == {"k.example": {}}
    assert store_for(config).remove_login("r.example") is False
    write_config(config, {"credsStore": "test"})
    assert store_for(config).remove_login("r.example") is True
    assert helper.read_text() == "erase r.example\n"


def test_fixed_store_answers_only_its_registry(tmp_path: Path) -> None:
    store = CredentialStore.fixed("R.example:5000", Credential("alice", "pw"))
    assert store.lookup("r.example:5000") == Credential("alice", "pw")
    assert store.lookup("other.example") is None
    with pytest.raises(RuntimeError):
        store.store_login("r.example:5000", "alice", "pw")
