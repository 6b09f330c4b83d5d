"""sfmlops: sales forecast MLOps at scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sfmlops")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
