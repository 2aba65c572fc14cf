"""Checks of where a command will write, done before any work so a long run never dies at its last step.

Nothing is created here: the output folder is made when the first output is committed. Writability is
probed by creating (and removing) a temporary folder in the nearest existing ancestor, which is the only test
that also holds for root, read-only mounts and ACLs (``os.access`` answers "yes" to root everywhere).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vidtrack.errors import InputError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".vidtrack-write-check.", dir=folder)
    except OSError as e:
        why = e.strerror or str(e)
        raise InputError(f"cannot write {option} {target}: {folder} is not writable ({why}); choose another "
                         "location") from None
    os.rmdir(probe)


def check_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Refuse an output folder that is an existing file, cannot be created, or cannot be written."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {out} is an existing file; give a folder (it is created if missing)")
    base = _nearest_existing(out.absolute())
    if not base.is_dir():
        raise InputError(f"cannot create {option} folder {out}: {base} is a file, not a folder")
    _probe_writable(base, option, out)
    return out


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Refuse an output file that is an existing folder or whose folder cannot be created or written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise InputError(f"{option} {target} is a folder; give a file name")
    base = _nearest_existing(target.absolute().parent)
    if not base.is_dir():
        raise InputError(f"cannot create {option} {target}: {base} is a file, not a folder")
    _probe_writable(base, option, target)
    return target
