"""The AWS edge: sessions, clients, credentials, retries.

The AWS SDK is imported here and in :mod:`jobwatch.source` only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["strip_account_host_prefix", "use_custom_endpoint"]


def strip_account_host_prefix(request: Any, **_: Any) -> None:
    """``before-sign.s3-control`` handler: undo botocore's ``{AccountId}.`` host prefix.

    The s3control endpoint ruleset puts ``{AccountId}.`` in front of the host of
    *any* endpoint, custom ones included, and ``inject_host_prefix=False`` does
    not stop it (REFERENCE.md). Against a custom ``endpoint_url`` (the simulator,
    a proxy) that host does not exist, so this handler removes the prefix before
    the request is signed: the signature then covers the host actually contacted.
    This is the one place jobwatch corrects it; every client built with
    ``endpoint_url`` goes through :func:`use_custom_endpoint`.
    """
    account = request.headers.get("x-amz-account-id")
    if not account:
        return
    if isinstance(account, bytes):
        account = account.decode("ascii", "replace")
    parts = urlsplit(request.url)
    prefix = f"{account}."
    if parts.netloc.startswith(prefix):
        request.url = urlunsplit(parts._replace(netloc=parts.netloc[len(prefix) :]))


def use_custom_endpoint(client: Any) -> None:
    """Make an s3control client built with ``endpoint_url`` talk to that exact host."""
    client.meta.events.register_first("before-sign.s3-control", strip_account_host_prefix)
