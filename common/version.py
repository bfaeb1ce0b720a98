"""The fedsynth release, compared at every handshake and written into saved models and reports.

It lives in ``common`` so that the site and coordinator code never import the command-line
package; ``fedsynth.__version__`` re-exports it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedsynth")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"
