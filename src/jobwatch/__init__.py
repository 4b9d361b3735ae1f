"""jobwatch: watch S3 Batch Operations jobs across accounts and regions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jobwatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
