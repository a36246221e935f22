"""gatewatch: a security log pipeline for Envoy-based API gateways (see README.md)."""

from importlib import metadata


def installed_version() -> str:
    """This release's version as installed (pyproject.toml's): ``gatewatch --version``, and serve's ``started`` line."""
    try:
        return metadata.version("gatewatch")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
