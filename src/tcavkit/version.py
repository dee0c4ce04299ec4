"""The package version, and the installed versions of other packages (a module of its own,
so that any module can read them without importing anything heavy)."""

from __future__ import annotations

from collections.abc import Iterable

__version__ = "0.1.0"


def installed_versions(packages: Iterable[str]) -> dict[str, str]:
    """Each package's installed version, read from its metadata (nothing is imported), or
    ``"not installed"``."""
    import importlib.metadata  # not at import: the version alone is read at start-up

    found = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
