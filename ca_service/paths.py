"""Where the templates are, from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """The wheel carries templates inside the package; a checkout has them at its top."""
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parent / "templates"):
        if (candidate / "base.html").is_file():
            return candidate
    raise FileNotFoundError(
        f"templates not found next to {PACKAGE_DIR}; reinstall the package (pip install .)"
    )
