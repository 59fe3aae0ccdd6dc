"""Registry accounts and per-repository rights, from a YAML file (reloaded when it changes).

::

    users:                          # people: name -> password hash
      alice: "$argon2id$v=19$m=65536,t=3,p=4$..."
    robots:                         # CI accounts; they log in as "robot$<name>"
      ci-pull: "$argon2id$..."
    grants:                         # every grant whose repository matches adds its actions
      - {repository: "team/.*", actions: [pull, push, delete], users: [alice]}
      - {repository: "team/.*", actions: [pull], robots: [ci-pull], roles: [agent]}
      - {repository: "public/.*", actions: [pull], anonymous: true}

Hashes are argon2 (``kraken registry hash-password``) or bcrypt (``htpasswd -B``). ``roles``
name certificate roles of mutual-TLS clients. Repository patterns match the whole name.
Password checks cost tens of milliseconds by design: callers run :meth:`Accounts.verify` in
a thread and remember successes (:class:`VerifiedCache`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import yaml
from twisted.logger import Logger

log = Logger(namespace="kraken.registry.accounts")
ACTIONS = ("pull", "push", "delete")
ROBOT_PREFIX = "robot$"


class AccountsError(ValueError):
    """The accounts file cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: ``user``, ``robot``, ``role`` (a certificate) or ``anonymous``."""

    kind: str
    name: str = ""

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @classmethod
    def from_subject(cls, subject: str) -> Principal:
        kind, _, name = subject.partition(":")
        if kind not in ("user", "robot", "role", "anonymous"):
            raise ValueError(f"unknown subject {subject!r}")
        return cls(kind, name)


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class Grant:
    repository: re.Pattern[str]
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    robots: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    anonymous: bool = False

    def covers(self, who: Principal) -> bool:
        if self.anonymous:
            return True
        members = {"user": self.users, "robot": self.robots, "role": self.roles}.get(who.kind, frozenset())
        return who.name in members


@dataclass
class AccountSet:
    users: dict[str, str] = field(default_factory=dict)
    robots: dict[str, str] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)


def _names(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AccountsError(f"{where}: expected a list of names")
    return frozenset(value)


def _hashes(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AccountsError(f"{where}: expected a mapping of name to password hash")
    out = {}
    for name, hashed in value.items():
        usable = isinstance(name, str) and isinstance(hashed, str) and hashed.startswith(("$argon2", "$2"))
        if not usable:
            raise AccountsError(f"{where}.{name}: expected an argon2 or bcrypt hash "
                                "(kraken registry hash-password)")
        out[name] = hashed
    return out


def parse_accounts(doc: Any, where: str) -> AccountSet:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise AccountsError(f"{where}: expected a mapping with users, robots, grants")
    unknown = set(doc) - {"users", "robots", "grants"}
    if unknown:
        raise AccountsError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: grants, robots, users)")
    accounts = AccountSet(_hashes(doc.get("users"), f"{where}: users"),
                          _hashes(doc.get("robots"), f"{where}: robots"))
    grants = doc.get("grants") or []
    if not isinstance(grants, list):
        raise AccountsError(f"{where}: grants: expected a list")
    known = {"repository", "actions", "users", "robots", "roles", "anonymous"}
    for i, entry in enumerate(grants):
        at = f"{where}: grants[{i}]"
        if not isinstance(entry, dict):
            raise AccountsError(f"{at}: expected a mapping")
        if set(entry) - known:
            raise AccountsError(f"{at}: unknown key {sorted(set(entry) - known)[0]!r}")
        try:
            pattern = re.compile(str(entry.get("repository", "")))
        except re.error as e:
            raise AccountsError(f"{at}.repository: bad regular expression: {e}") from None
        if "repository" not in entry:
            raise AccountsError(f"{at}: 'repository' (a regular expression) is required")
        actions = _names(entry.get("actions"), f"{at}.actions")
        if not actions or actions - set(ACTIONS):
            raise AccountsError(f"{at}.actions: expected some of {', '.join(ACTIONS)}")
        anonymous = entry.get("anonymous", False)
        if not isinstance(anonymous, bool):
            raise AccountsError(f"{at}.anonymous: expected true or false")
        accounts.grants.append(Grant(pattern, actions, _names(entry.get("users"), f"{at}.users"),
                                     _names(entry.get("robots"), f"{at}.robots"),
                                     _names(entry.get("roles"), f"{at}.roles"), anonymous))
    return accounts


class Accounts:
    """The accounts file, read again when its modification time changes (checked at most once a second)."""

    def __init__(self, path: str | os.PathLike[str] | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.current = AccountSet()
        self.stamp: tuple[int, int] | None = None
        self.checked = float("-inf")
        self.generation = 0  # changes whenever the accounts change
        self.hasher = argon2.PasswordHasher()
        self._dummy: str | None = None  # hashed on first need: checking it costs what a real check costs
        self.reload(force=True)

    def reload(self, force: bool = False) -> AccountSet:
        """The accounts now; a file that became unreadable keeps the last good version (and says so)."""
        if self.path is None:
            return self.current
        now = self.clock()
        if not force and now - self.checked < 1.0:
            return self.current
        self.checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self.stamp and not force:
                return self.current
            doc = yaml.safe_load(self.path.read_text())
            self.current = parse_accounts(doc, str(self.path))
            self.stamp = stamp
            self.generation += 1
        except (OSError, yaml.YAMLError, AccountsError) as e:
            if force and self.stamp is None:
                if isinstance(e, FileNotFoundError):
                    raise AccountsError(f"no accounts file {self.path} (`kraken cluster up` writes the dev "
                                        "cluster's; docs/registry.md, \"Login and rights\")") from None
                raise AccountsError(str(e)) from None
            log.error(
                "accounts file {path} unusable, keeping the previous version: {error}",
                path=str(self.path), error=str(e))
        return self.current

    def principal_for_login(self, login: str) -> tuple[Principal, str | None]:
        """The principal a login name means and its password hash (``None``: no such account)."""
        accounts = self.reload()
        if login.startswith(ROBOT_PREFIX):
            name = login[len(ROBOT_PREFIX):]
            return Principal("robot", name), accounts.robots.get(name)
        return Principal("user", login), accounts.users.get(login)

    def verify(self, login: str, password: str) -> Principal | None:
        """The principal if *password* is right (blocking: seconds' fractions of CPU); else ``None``.

        Unknown logins cost as much as wrong passwords, so timing tells nothing.
        """
        principal, hashed = self.principal_for_login(login)
        try:
            if hashed is None:
                if self._dummy is None:
                    self._dummy = self.hasher.hash(os.urandom(16).hex())
                self.hasher.verify(self._dummy, password)
                return None
            if hashed.startswith("$2"):
                ok = bcrypt.checkpw(password.encode(), hashed.encode())
            else:
                ok = self.hasher.verify(hashed, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
            return None
        return principal if ok else None

    def allowed(self, who: Principal, repository: str) -> frozenset[str]:
        """The actions *who* may take on *repository* now."""
        actions: set[str] = set()
        for grant in self.reload().grants:
            if grant.covers(who) and grant.repository.fullmatch(repository):
                actions |= grant.actions
        return frozenset(actions)

    def exists(self, who: Principal) -> bool:
        accounts = self.reload()
        if who.kind == "user":
            return who.name in accounts.users
        if who.kind == "robot":
            return who.name in accounts.robots
        return who.kind in ("role", "anonymous")


def hash_password(password: str) -> str:
    return argon2.PasswordHasher().hash(password)


DEV_USER = "dev"


def ensure_dev_accounts(directory: Path) -> Path:
    """The dev cluster's accounts: user ``dev`` with every right, a random password in
    ``<directory>/password`` (mode 0600); anonymous pulls, as the agent's loopback port allows
    them anyway. Both files are made on first use and kept afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    accounts, password_file = directory / "accounts.yaml", directory / "password"
    if accounts.exists() and password_file.exists():
        return accounts
    password = secrets.token_urlsafe(18)
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    doc = {
        "users": {DEV_USER: hash_password(password)},
        "grants": [
            {"repository": ".*", "actions": list(ACTIONS), "users": [DEV_USER]},
            {"repository": ".*", "actions": ["pull", "push"], "roles": ["client", "proxy"]},
            # the agent's loopback port serves the same images to anyone on the host
            {"repository": ".*", "actions": ["pull"], "anonymous": True},
        ],
    }
    tmp = accounts.with_name(accounts.name + ".tmp")
    tmp.write_text("# written by `kraken cluster up`; see docs/registry.md, \"Login and rights\"\n"
                   + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, accounts)
    return accounts


class VerifiedCache:
    """Logins whose password was checked lately: ``(login, password)`` → principal, for *ttl* seconds.

    Keys are hashes, so the cache holds no password; a use refreshes the entry.
    """

    def __init__(self, clock: Callable[[], float], ttl: float = 300.0, size: int = 1024) -> None:
        self.clock, self.ttl, self.size = clock, ttl, size
        self.entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    @staticmethod
    def _key(login: str, password: str) -> bytes:
        return hashlib.sha256(f"{len(login)}:{login}:{password}".encode()).digest()

    def get(self, login: str, password: str) -> Principal | None:
        key = self._key(login, password)
        entry = self.entries.get(key)
        if entry is None:
            return None
        principal, at = entry
        now = self.clock()
        if now - at > self.ttl:
            del self.entries[key]
            return None
        self.entries[key] = (principal, now)
        self.entries.move_to_end(key)
        return principal

    def put(self, login: str, password: str, principal: Principal) -> None:
        self.entries[self._key(login, password)] = (principal, self.clock())
        self.entries.move_to_end(self._key(login, password))
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()
