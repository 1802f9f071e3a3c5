"""benchharness: pretrain or load a visual representation, transfer it to the PASCAL VOC suite,
score it with the standard metrics, and print leaderboards.

Plugins implement the hooks in :mod:`benchharness.hookspecs`, decorated with :data:`hookimpl`.
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import hookimpl

try:
    __version__ = version("benchharness")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["hookimpl", "__version__"]
