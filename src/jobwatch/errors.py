"""jobwatch's exceptions: one root, so callers can catch everything we raise."""

from __future__ import annotations

__all__ = ["ConfigError", "JobwatchError", "SourceError"]


class JobwatchError(Exception):
    """Root of every error jobwatch raises on purpose."""


class ConfigError(JobwatchError):
    """The configuration is invalid. ``str()`` names each bad key, its value and the fix."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class SourceError(JobwatchError):
    """A call to the job source failed for one target.

    ``code`` is the AWS error code (or a jobwatch one such as ``ResponseParseError``);
    ``throttled`` says whether AWS asked us to slow down.
    """

    def __init__(
        self,
        account_id: str,
        region: str,
        operation: str,
        code: str,
        message: str,
        *,
        throttled: bool = False,
        not_found: bool = False,
        invalid_token: bool = False,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.operation = operation
        self.code = code
        self.message = message
        self.throttled = throttled
        self.not_found = not_found
        self.invalid_token = invalid_token
        super().__init__(f"{operation} {account_id}/{region}: {code}: {message}")
