"""The installed package version."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("meetara-lab")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
