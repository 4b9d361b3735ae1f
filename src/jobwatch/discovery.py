"""Account discovery: the targets of an AWS Organization, refreshed on an interval.

:class:`Discovery` keeps the last known list of accounts. A refresh that fails
(Organizations unreachable, throttled, access denied, a timeout) is logged,
counted and shown on ``jobwatch_discovery_up``, and the last known list stays in
force: polling never stops because discovery failed. With a ``state_file`` the
list is also kept next to it, so a restart while Organizations is unreachable
still watches every account it watched before.

Only :class:`OrganizationsSource` talks to AWS, through a client and credentials
made by :mod:`jobwatch.aws`; the filters are pure functions of plain types, and
``targets.py`` turns the accounts into targets.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from jobwatch.aws import assume_role_credentials, client_config, prepare_session, service_client
from jobwatch.clock import Clock
from jobwatch.config import Config, DiscoveryConfig
from jobwatch.errors import JobwatchError
from jobwatch.log import get_logger
from jobwatch.model import Account
from jobwatch.persist import write_atomic

__all__ = [
    "Account",
    "AccountSource",
    "Discovery",
    "DiscoveryError",
    "OrganizationsSource",
    "cache_path_for",
    "passes_filters",
    "tags_match",
]

_log = get_logger("jobwatch.discovery")
_CACHE_VERSION = 1
#: ListTagsForResource calls in flight at once (Organizations allows a few per second).
_TAG_CONCURRENCY = 4
#: Lifetime of ``organizations_role_arn``'s credentials. They are kept from one
#: refresh to the next and assumed again within 15 minutes of expiry, so a
#: shorter lifetime would mean an AssumeRole before every call.
_ORGANIZATIONS_ROLE_SECONDS = 3600


class DiscoveryError(JobwatchError):
    """A discovery refresh failed; ``code`` is the AWS error code or the exception's name."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class AccountSource(Protocol):
    """Where accounts come from (Organizations; a fake in tests)."""

    async def fetch(self, want_tags: Callable[[Account], bool]) -> list[Account]:
        """Every account, with tags looked up for those ``want_tags`` accepts.

        Raises :class:`DiscoveryError`.
        """
        ...


# --------------------------------------------------------------------------- pure filters


def passes_filters(account: Account, config: DiscoveryConfig) -> bool:
    """State and account id filters (the ones that need no tags)."""
    if account.state not in config.statuses:
        return False
    aid = account.account_id
    if config.include and not any(fnmatch.fnmatchcase(aid, p) for p in config.include):
        return False
    return not any(fnmatch.fnmatchcase(aid, p) for p in config.exclude)


def tags_match(account: Account, config: DiscoveryConfig) -> bool:
    """Every ``tags`` entry is on the account (``"*"`` accepts any value)."""
    tags = dict(account.tags)
    for key, value in config.tags.items():
        if key not in tags or (value != "*" and tags[key] != value):
            return False
    return True


def _needs_tags(config: DiscoveryConfig) -> bool:
    return bool(config.tags or config.tag_labels)


# --------------------------------------------------------------------------- Organizations


class OrganizationsSource:
    """Lists accounts with AWS Organizations (aiobotocore).

    ``ListAccounts`` for the whole organization, or ``ListAccountsForParent`` for
    each of ``organizational_units`` (and, with ``recursive``, every OU below them
    through ``ListOrganizationalUnitsForParent``); ``ListTagsForResource`` per
    account when tags are filtered on or turned into labels. The caller needs
    ``organizations:ListAccounts`` (or ``ListAccountsForParent`` and
    ``ListOrganizationalUnitsForParent``) and ``organizations:ListTagsForResource``
    in the management account or a delegated administrator account; with
    ``organizations_role_arn`` jobwatch assumes that role first.

    A client is built for each refresh and closed after it: a refresh runs every
    few minutes, and nothing is held open in between. The role's credentials
    are kept and renewed ahead of expiry, as the poll clients' are.
    """

    def __init__(
        self,
        config: DiscoveryConfig,
        *,
        session: AioSession | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
    ) -> None:
        self._config = config
        self._session = prepare_session(session)
        self._aio_config = client_config(max_attempts=max_attempts, timeout=timeout)
        self._credentials: Any = None
        if config.organizations_role_arn is not None:
            self._credentials = assume_role_credentials(
                self._session,
                role_arn=config.organizations_role_arn,
                region=config.organizations_region,
                session_name=config.session_name or "jobwatch-discovery",
                duration_seconds=_ORGANIZATIONS_ROLE_SECONDS,
                external_id=config.external_id,
                sts_config=self._aio_config,
            )

    async def fetch(self, want_tags: Callable[[Account], bool]) -> list[Account]:
        try:
            async with service_client(
                self._session,
                "organizations",
                region=self._config.organizations_region,
                config=self._aio_config,
                credentials=self._credentials,
            ) as org:
                accounts = await self._list(org)
                wanted = [a for a in accounts if want_tags(a)]
                if not wanted:
                    return accounts
                limit = asyncio.Semaphore(_TAG_CONCURRENCY)

                async def with_tags(account: Account) -> Account:
                    async with limit:
                        tags = await self._tags(org, account.account_id)
                    return Account(account.account_id, account.name, account.state, tags)

                tagged = {
                    a.account_id: a for a in await asyncio.gather(*(with_tags(a) for a in wanted))
                }
                return [tagged.get(a.account_id, a) for a in accounts]
        except ClientError as e:
            error = e.response.get("Error", {})
            raise DiscoveryError(
                str(error.get("Code") or "ClientError"), str(error.get("Message") or e)
            ) from None
        except BotoCoreError as e:
            raise DiscoveryError(type(e).__name__, str(e)) from None

    async def _list(self, org: Any) -> list[Account]:
        found: dict[str, Account] = {}
        if not self._config.organizational_units:
            async for page in org.get_paginator("list_accounts").paginate():
                for raw in page.get("Accounts", []):
                    found.setdefault(raw["Id"], _account(raw))
            return list(found.values())
        pending = list(self._config.organizational_units)
        visited: set[str] = set()
        while pending:
            parent = pending.pop()
            if parent in visited:
                continue
            visited.add(parent)
            async for page in org.get_paginator("list_accounts_for_parent").paginate(
                ParentId=parent
            ):
                for raw in page.get("Accounts", []):
                    found.setdefault(raw["Id"], _account(raw))
            if self._config.recursive:
                async for page in org.get_paginator(
                    "list_organizational_units_for_parent"
                ).paginate(ParentId=parent):
                    pending.extend(ou["Id"] for ou in page.get("OrganizationalUnits", []))
        return list(found.values())

    async def _tags(self, org: Any, account_id: str) -> tuple[tuple[str, str], ...]:
        tags: dict[str, str] = {}
        async for page in org.get_paginator("list_tags_for_resource").paginate(
            ResourceId=account_id
        ):
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        return tuple(sorted(tags.items()))


def _account(raw: dict[str, Any]) -> Account:
    return Account(
        account_id=str(raw["Id"]),
        name=str(raw.get("Name") or ""),
        state=str(raw.get("State") or raw.get("Status") or ""),
    )


# --------------------------------------------------------------------------- the refresher


def cache_path_for(state_file: Path) -> Path:
    """Where the last discovered accounts are kept, next to the state file."""
    return state_file.with_name(state_file.name + ".discovery")


def _fingerprint(config: DiscoveryConfig) -> str:
    # The cached list was filtered with the config of its day: a changed filter
    # must not resurrect accounts the new one excludes.
    text = config.model_dump_json(exclude={"interval", "timeout"})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Discovery:
    """The last known discovered accounts and the health of their refreshes."""

    def __init__(
        self,
        config: Config,
        source: AccountSource,
        clock: Clock,
        cache_path: Path | None = None,
    ) -> None:
        if config.discovery is None:
            raise ValueError("Discovery needs a config with a discovery section")
        self._config = config
        self._discovery: DiscoveryConfig = config.discovery
        self._source = source
        self._clock = clock
        self._cache_path = cache_path
        #: The last known list (filters applied); None until one is known.
        self.accounts: list[Account] | None = None
        self.up = False
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.refreshes: Counter[str] = Counter({"success": 0, "failure": 0})

    @property
    def interval(self) -> float:
        return self._discovery.interval

    @property
    def timeout(self) -> float:
        return self._discovery.timeout

    def load_cache(self) -> bool:
        """Take the list a previous run saved, if it is there and for this config."""
        path = self._cache_path
        if path is None:
            return False
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("version") != _CACHE_VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            if doc.get("config") != _fingerprint(self._discovery):
                _log.info("discovery_cache_ignored", path=str(path), reason="discovery changed")
                return False
            accounts = [
                Account(str(a), str(n), str(s), tuple(sorted((str(k), str(v)) for k, v in t)))
                for a, n, s, t in doc["accounts"]
            ]
            fetched_at = float(doc["fetched_at"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as e:
            _log.warning("discovery_cache_discarded", path=str(path), error=str(e)[:300])
            return False
        self.accounts = accounts
        self.last_success = fetched_at
        _log.info("discovery_cache_loaded", path=str(path), accounts=len(accounts))
        return True

    async def refresh(self, limit: float | None = None) -> bool:
        """List the accounts again. Never raises (but on cancel); False if it failed.

        ``limit``: seconds the refresh may take (default ``discovery.timeout``).
        On failure the last known list stays as it is.
        """
        d = self._discovery
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit if limit is not None else d.timeout):
                listed = await self._source.fetch(lambda a: _needs_tags(d) and passes_filters(a, d))
        except DiscoveryError as e:
            return self._failed(e.code, e.message, started)
        except TimeoutError:
            return self._failed("Timeout", "the refresh took longer than its timeout", started)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not stop polling
            _log.exception("discovery_crashed", error=repr(e)[:500])
            return self._failed(type(e).__name__, repr(e), started)
        accounts = sorted(
            (a for a in listed if passes_filters(a, d) and tags_match(a, d)),
            key=lambda a: a.account_id,
        )
        before = {a.account_id for a in self.accounts or []}
        after = {a.account_id for a in accounts}
        self.accounts = accounts
        self.up = True
        self.last_success = self._clock.time()
        self.last_duration = time.monotonic() - started
        self.refreshes["success"] += 1
        _log.info(
            "discovery_refreshed",
            listed=len(listed),
            accounts=len(accounts),
            joined=len(after - before),
            left=len(before - after),
            seconds=round(self.last_duration, 3),
        )
        if self._cache_path is not None:
            await self._save_cache(accounts)
        return True

    def _failed(self, code: str, message: str, started: float) -> bool:
        self.up = False
        self.last_duration = time.monotonic() - started
        self.refreshes["failure"] += 1
        _log.warning(
            "discovery_failed",
            error_code=code,
            error=message[:500],
            keeping=len(self.accounts) if self.accounts is not None else 0,
        )
        return False

    async def _save_cache(self, accounts: list[Account]) -> None:
        path = self._cache_path
        assert path is not None
        doc = {
            "version": _CACHE_VERSION,
            "config": _fingerprint(self._discovery),
            "fetched_at": self.last_success,
            "accounts": [[a.account_id, a.name, a.state, list(a.tags)] for a in accounts],
        }
        try:
            await asyncio.to_thread(write_atomic, path, json.dumps(doc).encode())
        except OSError as e:
            # The list in memory is what counts; the file only helps a restart.
            _log.warning("discovery_cache_write_failed", path=str(path), error=str(e))
