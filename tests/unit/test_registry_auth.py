"""Tokens, scopes and accounts (sans-IO): expiry on a Clock, forgeries, grants, password hashes."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import jwt
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kraken.registry.accounts import (
    ANONYMOUS,
    Accounts,
    AccountsError,
    Principal,
    VerifiedCache,
    hash_password,
)
from kraken.registry.tokens import Scope, TokenError, TokenIssuer, load_key, parse_scopes, scope_header

KEY = b"s" * 32
ALICE = Principal("user", "alice")


def test_tokens_round_trip_and_expire_on_the_clock() -> None:
    issuer = TokenIssuer(KEY, "kraken", ttl=300)
    token = issuer.issue(ALICE, {"team/app": frozenset({"pull", "push"})}, now=1000.0)
    checked = issuer.check(token, now=1200.0)
    assert checked.principal == ALICE and checked.access == {"team/app": frozenset({"pull", "push"})}
    assert issuer.check(token, now=1250.0) is checked  # remembered, not decoded again
    with pytest.raises(TokenError, match="expired"):
        issuer.check(token, now=1300.0)
    assert token not in issuer.checked
    with pytest.raises(TokenError, match="expired"):
        issuer.check(token, now=1300.0)
    early = issuer.issue(ALICE, {}, now=1000.0)
    with pytest.raises(TokenError, match="not valid yet"):
        issuer.check(early, now=900.0)
    many = TokenIssuer(KEY, "kraken", ttl=300, remembered=2)
    for i in range(3):
        many.check(many.issue(ALICE, {f"r{i}": frozenset()}, now=1000.0), now=1000.0)
    assert len(many.checked) == 2


def test_forged_and_foreign_tokens_are_refused() -> None:
    issuer = TokenIssuer(KEY, "kraken", ttl=300)
    claims = {"iss": "kraken", "aud": "kraken", "sub": "user:alice", "nbf": 0, "exp": 10**10,
              "access": [{"type": "repository", "name": "x", "actions": ["pull"]}]}
    assert issuer.check(jwt.encode(claims, KEY, algorithm="HS256"), 5).access == {"x": frozenset({"pull"})}
    for bad in (jwt.encode(claims, b"o" * 32, algorithm="HS256"),
                jwt.encode(claims, None, algorithm="none"),
                jwt.encode({**claims, "aud": "other"}, KEY, algorithm="HS256"),
                jwt.encode({**claims, "iss": "other"}, KEY, algorithm="HS256"),
                jwt.encode({k: v for k, v in claims.items() if k != "exp"}, KEY, algorithm="HS256"),
                jwt.encode({**claims, "sub": "admin:root"}, KEY, algorithm="HS256"),
                "a.b.c", ""):
        with pytest.raises(TokenError):
            issuer.check(bad, 5)
    # actions outside pull/push/delete are ignored
    odd = jwt.encode({**claims, "access": [{"type": "repository", "name": "x", "actions": ["*", "admin"]}]},
                     KEY, algorithm="HS256")
    assert issuer.check(odd, 5).access == {"x": frozenset()}


def test_scopes() -> None:
    assert parse_scopes(["repository:team/app:pull,push", "repository:a:pull repository:b:delete"]) == [
        Scope("repository", "team/app", frozenset({"pull", "push"})),
        Scope("repository", "a", frozenset({"pull"})), Scope("repository", "b", frozenset({"delete"}))]
    assert parse_scopes(["registry:catalog:*"]) == [Scope("registry", "catalog", frozenset({"*"}))]
    assert parse_scopes(["repository(plugin):x:pull"]) == [Scope("repository", "x", frozenset({"pull"}))]
    assert parse_scopes(["nonsense", "a:b", ""]) == []
    assert len(parse_scopes(["repository:x:pull " * 1000])) == 32
    assert scope_header("x/y", ("pull", "push")) == "repository:x/y:pull,push"
    assert scope_header("x", ("pull", "pull")) == "repository:x:pull"


@given(st.lists(st.text(max_size=200), max_size=5))
def test_scope_parser_takes_any_input(values: list[str]) -> None:
    for scope in parse_scopes(values):
        assert scope.type and scope.name


def test_short_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_key(str(tmp_path / "k"))
    assert len(load_key(None)) == 32


def _accounts(tmp_path: Path, doc: object) -> Accounts:
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Accounts(path)


def test_grants_and_passwords(tmp_path: Path) -> None:
    accounts = _accounts(tmp_path, {
        "users": {"alice": hash_password("pw"), "bob": bcrypt.hashpw(b"bpw", bcrypt.gensalt(4)).decode()},
        "robots": {"ci": hash_password("rpw")},
        "grants": [{"repository": "team/.*", "actions": ["pull", "push"], "users": ["alice"]},
                   {"repository": "team/.*", "actions": ["pull"], "robots": ["ci"], "roles": ["agent"]},
                   {"repository": "pub/.*", "actions": ["pull"], "anonymous": True}],
    })
    assert accounts.verify("alice", "pw") == ALICE
    assert accounts.verify("alice", "nope") is None
    assert accounts.verify("bob", "bpw") == Principal("user", "bob")
    assert accounts.verify("robot$ci", "rpw") == Principal("robot", "ci")
    assert accounts.verify("ci", "rpw") is None  # robots log in with the robot$ prefix
    assert accounts.verify("mallory", "pw") is None
    assert accounts.allowed(ALICE, "team/app") == {"pull", "push"}
    assert accounts.allowed(ALICE, "team") == set()  # whole-name match
    assert accounts.allowed(Principal("robot", "ci"), "team/app") == {"pull"}
    assert accounts.allowed(Principal("role", "agent"), "team/app") == {"pull"}
    assert accounts.allowed(ANONYMOUS, "pub/x") == {"pull"} and accounts.allowed(ANONYMOUS, "team/x") == set()
    assert accounts.allowed(ALICE, "pub/x") == {"pull"}


@pytest.mark.parametrize("doc, message", [
    ({"users": {"alice": "plaintext"}}, "users.alice: expected an argon2 or bcrypt hash"),
    ({"grants": [{"actions": ["pull"]}]}, r"grants\[0\]: 'repository'"),
    ({"grants": [{"repository": "x", "actions": ["admin"]}]}, r"grants\[0\].actions"),
    ({"grants": [{"repository": "(", "actions": ["pull"]}]}, "bad regular expression"),
    ({"admins": []}, "unknown key 'admins'"),
])
def test_bad_accounts_files_name_the_entry(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(AccountsError, match=message):
        _accounts(tmp_path, doc)


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_last(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"grants": [{"repository": "a", "actions": ["pull"], "anonymous": True}]}))
    accounts = Accounts(path, clock=lambda: now[0])
    assert accounts.allowed(ANONYMOUS, "a") == {"pull"}
    path.write_text(yaml.safe_dump({"grants": []}) + "\n")
    assert accounts.allowed(ANONYMOUS, "a") == {"pull"}  # checked at most once a second
    now[0] = 2.0
    assert accounts.allowed(ANONYMOUS, "a") == set()
    generation = accounts.generation
    path.write_text("grants: [unclosed\n")
    now[0] = 4.0
    assert accounts.allowed(ANONYMOUS, "a") == set() and accounts.generation == generation


def test_verified_cache_expires_and_holds_no_password() -> None:
    now = [0.0]
    cache = VerifiedCache(lambda: now[0], ttl=10, size=2)
    cache.put("alice", "pw", ALICE)
    assert cache.get("alice", "pw") == ALICE and cache.get("alice", "other") is None
    assert all(b"pw" not in key for key in cache.entries)
    now[0] = 9.0
    assert cache.get("alice", "pw") == ALICE  # a use refreshes it
    now[0] = 18.0
    assert cache.get("alice", "pw") == ALICE
    now[0] = 40.0
    assert cache.get("alice", "pw") is None
    for i in range(3):
        cache.put(f"u{i}", "x", ALICE)
    assert len(cache.entries) == 2


def test_which_plain_listeners_reach_beyond_this_machine() -> None:
    from kraken.proxy.tap import _open_to_the_network

    assert _open_to_the_network("tcp:15000")
    assert _open_to_the_network("tcp:port=5000:interface=0.0.0.0")
    assert _open_to_the_network(r"tcp6:0:interface=\:\:")
    assert not _open_to_the_network("tcp:15000:interface=127.0.0.1")
    assert not _open_to_the_network(r"tcp6:0:interface=\:\:1")
    assert not _open_to_the_network("tls:tcp:1:interface=0.0.0.0")  # mutual TLS admits certificates only


def test_dev_accounts_are_made_once(tmp_path: Path) -> None:
    from kraken.registry.accounts import DEV_USER, ensure_dev_accounts

    path = ensure_dev_accounts(tmp_path / "registry")
    password = (tmp_path / "registry" / "password").read_text().strip()
    assert (tmp_path / "registry" / "password").stat().st_mode & 0o777 == 0o600
    accounts = Accounts(path)
    assert accounts.verify(DEV_USER, password) == Principal("user", DEV_USER)
    assert accounts.allowed(Principal("user", DEV_USER), "any/repo") == {"pull", "push", "delete"}
    assert accounts.allowed(ANONYMOUS, "any/repo") == {"pull"}  # pushes and deletes need the login
    ensure_dev_accounts(tmp_path / "registry")
    assert (tmp_path / "registry" / "password").read_text().strip() == password
