"""facescale: a face-dataset factory (scrape, curate on Ray, train Inception V3, serve)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facescale")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
