"""Report folders that never destroy a user's files nor mix the files of two runs.

Every report folder pyro_nf writes holds a manifest, ``.pyro_nf_report.json``, listing the files
the run wrote. Before any work, :func:`check_folder` accepts a folder that is missing, empty or an
earlier pyro_nf report, and refuses anything else (a file, a path under a file, a non-empty folder
of someone else's files) unless ``overwrite=True``. :func:`start_folder` then removes the files of
the earlier report (only those its manifest lists), and :func:`finish_folder` writes the new
manifest.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "report"
    >>> check_folder(folder) == folder
    True
    >>> _ = start_folder(folder); (folder / "table.csv").write_text("a\\n")
    2
    >>> finish_folder(folder, ["table.csv"], kind="compare")
    >>> check_folder(folder) == folder  # an earlier report may be replaced
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MANIFEST", "check_folder", "finish_folder", "start_folder"]

#: the manifest file in every report folder
MANIFEST = ".pyro_nf_report.json"


def _manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def check_folder(folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that a report can be written into ``folder`` (before a fit spends any time).

    Raises:
        ValueError: ``folder`` is empty text, a file, under a file, or a non-empty folder that is not
            an earlier pyro_nf report (unless ``overwrite``).
    """
    if str(folder).strip() == "":
        raise ValueError("the output folder must be named (got an empty path)")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {str(path)!r} is an existing file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"output folder {str(path)!r} lies under {str(parent)!r}, which is a file")
            break
    if path.is_dir() and any(path.iterdir()) and _manifest(path) is None and not overwrite:
        raise ValueError(
            f"output folder {str(path)!r} is not empty and is not an earlier pyro-nf report; choose "
            "another folder, or allow writing into it with --overwrite (overwrite=True)"
        )
    return path


def start_folder(folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """:func:`check_folder`, then create ``folder`` and delete the files an earlier report wrote there."""
    path = check_folder(folder, overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    old = _manifest(path)
    for name in old["files"] if old else []:
        target = path / str(name)
        if target.parent == path and target.is_file():
            target.unlink()
    (path / MANIFEST).unlink(missing_ok=True)
    return path


def finish_folder(folder: str | os.PathLike, files: Iterable[str], *, kind: str) -> None:
    """Write the manifest listing the ``files`` this run wrote into ``folder``."""
    payload = {"written_by": f"pyro-nf {kind}", "files": sorted(set(files))}
    (Path(folder) / MANIFEST).write_text(json.dumps(payload, indent=1) + "\n")
