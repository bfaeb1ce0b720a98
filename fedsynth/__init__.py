"""fedsynth: federated, differentially private synthetic emergency-department trauma records."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedsynth")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"
