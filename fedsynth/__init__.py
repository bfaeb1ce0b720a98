"""fedsynth: federated, differentially private synthetic emergency-department trauma records."""

from common.version import __version__

__all__ = ["__version__"]
