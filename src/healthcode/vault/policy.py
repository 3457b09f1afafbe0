"""The versioned access policy: caller x field type x purpose -> plain, masked or deny.

The policy is a TOML file (default ``$HEALTHCODE_HOME/vault/policy.toml``, written on first start)::

    version = 1                       # required, increases with every change; audited per call

    [[rule]]
    callers  = ["role:platform"]      # "role:<role>", a caller name, or "*"
    fields   = ["ID_NUMBER", "NAME"]  # field types, or "*"
    purposes = ["CORRECTION_REVIEW"]  # purposes, or "*"
    access   = "plain"                # "plain", "masked" or "deny"

Anything no rule allows is denied. When several rules match, the most restrictive wins
(deny > masked > plain), so a deny rule can carve an exception out of a broad allow. The file is
re-read when it changes; a broken new version is refused (logged) and the previous one stays.
"""

from __future__ import annotations

import threading
import time
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from healthcode.vault.fields import FieldType, Purpose

log = structlog.get_logger(__name__)


class Access(StrEnum):
    """What a caller gets for one field and purpose."""

    PLAIN = "plain"
    MASKED = "masked"
    DENY = "deny"


_RANK = {Access.PLAIN: 0, Access.MASKED: 1, Access.DENY: 2}

DEFAULT_POLICY = """\
# Access policy of the healthcode privacy vault (see docs/adr/0101-vault-key-hierarchy.md).
# Increase `version` with every change; each decision records the version it used.
# Anything no rule allows is denied; when rules overlap the most restrictive one wins.
version = 1

# A person sees their own data; officials see plaintext while reviewing a correction.
[[rule]]
callers = ["role:platform"]
fields = ["ID_NUMBER", "PHONE", "NAME", "ADDRESS"]
purposes = ["DATA_SUBJECT_REQUEST", "CORRECTION_REVIEW"]
access = "plain"

# Contact tracing needs to reach people: name, phone, address and ID number.
[[rule]]
callers = ["role:platform"]
fields = ["ID_NUMBER", "PHONE", "NAME", "ADDRESS"]
purposes = ["EPIDEMIOLOGICAL_INVESTIGATION"]
access = "plain"

# Checkpoints and the provincial platform only ever see masked name and ID number,
# and never phone numbers or addresses.
[[rule]]
callers = ["role:platform"]
fields = ["ID_NUMBER", "NAME"]
purposes = ["IDENTITY_VERIFICATION", "PROVINCIAL_MUTUAL_RECOGNITION"]
access = "masked"
"""


class PolicyError(ValueError):
    """The policy file is malformed."""


@dataclass(frozen=True)
class Rule:
    """One policy rule."""

    callers: frozenset[str]
    fields: frozenset[FieldType]
    purposes: frozenset[Purpose]
    access: Access

    def matches(self, caller: str, role: str, field: FieldType, purpose: Purpose) -> bool:
        """True when this rule speaks about the request."""
        who = "*" in self.callers or caller in self.callers or f"role:{role}" in self.callers
        return who and field in self.fields and purpose in self.purposes


@dataclass(frozen=True)
class Policy:
    """A parsed policy version."""

    version: int
    rules: tuple[Rule, ...]

    def decide(self, caller: str, role: str, field: FieldType, purpose: Purpose) -> Access:
        """The most restrictive matching rule's access; deny when none matches."""
        best: Access | None = None
        for rule in self.rules:
            if rule.matches(caller, role, field, purpose) and (
                best is None or _RANK[rule.access] > _RANK[best]
            ):
                best = rule.access
        return best or Access.DENY


def _names(raw: Any, allowed: type[StrEnum], where: str) -> frozenset[Any]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise PolicyError(f"{where}: must be a non-empty list of strings")
    if "*" in raw:
        return frozenset(allowed)
    try:
        return frozenset(allowed(x) for x in raw)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from exc


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy document."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}") from exc
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PolicyError("version: must be a positive integer")
    unknown = set(doc) - {"version", "rule"}
    if unknown:
        raise PolicyError(f"unknown keys: {sorted(unknown)}")
    rules = []
    for i, raw in enumerate(doc.get("rule", [])):
        where = f"rule[{i}]"
        if not isinstance(raw, dict) or set(raw) - {"callers", "fields", "purposes", "access"}:
            raise PolicyError(f"{where}: only callers, fields, purposes and access are allowed")
        callers = raw.get("callers")
        if (
            not isinstance(callers, list)
            or not callers
            or not all(isinstance(c, str) and c for c in callers)
        ):
            raise PolicyError(f"{where}.callers: must be a non-empty list of strings")
        try:
            access = Access(str(raw.get("access")))
        except ValueError as exc:
            raise PolicyError(f"{where}.access: must be plain, masked or deny") from exc
        rules.append(
            Rule(
                callers=frozenset(callers),
                fields=_names(raw.get("fields"), FieldType, f"{where}.fields"),
                purposes=_names(raw.get("purposes"), Purpose, f"{where}.purposes"),
                access=access,
            )
        )
    return Policy(version=version, rules=tuple(rules))


class PolicyStore:
    """Loads the policy file and reloads it when it changes (checked at most once a second)."""

    def __init__(self, path: Path, *, create_default: bool = True) -> None:
        self._path = path
        self._lock = threading.Lock()
        if create_default and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(DEFAULT_POLICY, encoding="utf-8")
        self._mtime = path.stat().st_mtime_ns
        self._policy = parse_policy(path.read_text(encoding="utf-8"))
        self._checked = time.monotonic()

    def current(self) -> Policy:
        """The policy in force."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self._policy
        with self._lock:
            self._checked = now
            try:
                mtime = self._path.stat().st_mtime_ns
            except OSError:
                log.error("vault.policy.missing", path=str(self._path))
                return self._policy
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    policy = parse_policy(self._path.read_text(encoding="utf-8"))
                except (PolicyError, OSError) as exc:
                    log.error("vault.policy.rejected", error=str(exc), kept=self._policy.version)
                    return self._policy
                if policy.version < self._policy.version:
                    log.error("vault.policy.version_decreased", kept=self._policy.version)
                    return self._policy
                log.info("vault.policy.loaded", version=policy.version)
                self._policy = policy
            return self._policy

    def reload_now(self) -> Policy:
        """Force a check on the next call (tests, SIGHUP)."""
        self._checked = 0.0
        return self.current()
