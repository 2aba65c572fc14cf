"""Atomic outputs: a killed run leaves the previous complete output or none, never half of one.

Three shapes, all staged beside the target (same folder, hence same filesystem, so the final rename is a
single atomic ``rename(2)``):

* :func:`atomic_write`: a context manager for writing a whole file in one go.
* :class:`AtomicFile`: a file that stays open while results stream in (``write`` many times, ``commit`` once).
  With ``open_file=False`` it only reserves the temporary path, for libraries that open files by name
  (PyAV writes the MP4 itself).
* :class:`AtomicDir`: a folder of many files (PNG sequences). Everything is written into a hidden temporary
  folder which is renamed onto the target at commit. Replacing an existing folder takes two renames (old
  folder aside, new folder in); a kill between them leaves no folder under the final name, which still
  satisfies "previous complete output or none".

Staging names start with a dot and end in ``.tmp`` (``.masks.json.k2j4.tmp``, ``.davis.x8f1.tmp/``). They
are removed on any Python-level failure and when an uncommitted stager is garbage-collected; only a hard kill
(SIGKILL, power loss) can leave one behind, and it never carries the final name.

Durability: single files are fsynced before the rename. Folder contents are not fsynced file by file (a
thousand fsyncs would dominate the export); the folder rename protects against a killed process, not against
losing power mid-export.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from vidtrack.errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``."""
    out = AtomicFile(path, mode, **kwargs)
    try:
        yield out.file
    except BaseException:
        out.abort()
        raise
    out.commit()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (no race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str, handle: IO[Any] | None) -> None:
    """Finalizer of an uncommitted stager: close and delete the temporary file or folder."""
    if handle is not None:
        with contextlib.suppress(Exception):
            handle.close()
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _parent_of(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {target.parent}: {e.strerror or e}") from None
    return target.parent


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit`.

    ``file`` is the open handle (``mode`` as for :func:`open`); with ``open_file=False`` there is no handle
    and ``tmp_path`` is for a library to write by name.
    """

    def __init__(self, path: str | Path, mode: str = "w", *, open_file: bool = True, **kwargs: Any) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"cannot write {self.path}: it is a folder; give a file name")
        parent = _parent_of(self.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise InputError(f"cannot write in {parent}: {e.strerror or e}") from None
        self.tmp_path = Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the output should get the usual permissions
        self._file: IO[Any] | None = None
        if open_file:
            if "b" not in mode:
                kwargs.setdefault("encoding", "utf-8")
            self._file = os.fdopen(fd, mode, **kwargs)
        else:
            os.close(fd)
        self._done = False
        self._finalizer = weakref.finalize(self, _remove_quietly, tmp, self._file)

    @property
    def file(self) -> IO[Any]:
        if self._file is None:
            raise RuntimeError("this AtomicFile was opened with open_file=False; write to tmp_path")
        return self._file

    def commit(self) -> Path:
        """fsync, then rename onto the final path. Idempotent."""
        if self._done:
            return self.path
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        else:
            with open(self.tmp_path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(self.tmp_path, self.path)
        self._done = True
        self._finalizer.detach()
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the final path is untouched. Idempotent."""
        if not self._done:
            self._done = True
            self._finalizer()


def _random_suffix() -> str:
    return secrets.token_hex(4)


class AtomicDir:
    """A hidden temporary folder beside ``path`` that becomes ``path`` on :meth:`commit`.

    ``replaceable(existing_folder) -> bool`` says whether an existing folder at ``path`` may be replaced
    (it should recognise a previous export of the same format). A folder holding anything else is refused at
    once with :class:`InputError`, so an export never deletes a user's unrelated files.
    """

    def __init__(self, path: str | Path, *, replaceable: Callable[[Path], bool], what: str = "export") -> None:
        self.path = Path(path)
        self._replaceable = replaceable
        self._what = what
        self._check_target()
        parent = _parent_of(self.path)
        try:
            self.tmp_path = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent))
        except OSError as e:
            raise InputError(f"cannot write in {parent}: {e.strerror or e}") from None
        os.chmod(self.tmp_path, 0o777 & ~_umask())  # mkdtemp makes 0700
        self._done = False
        self._finalizer = weakref.finalize(self, _remove_quietly, str(self.tmp_path), None)

    def _check_target(self) -> None:
        p = self.path
        if p.exists() or p.is_symlink():
            if not p.is_dir() or p.is_symlink():
                raise InputError(f"cannot write the {self._what} folder {p}: a file of that name exists; remove it "
                                 "or choose another output")
            if not self._replaceable(p):
                raise InputError(f"cannot write the {self._what} folder {p}: it exists and holds other files; "
                                 "choose a new or empty folder")

    def commit(self) -> Path:
        """Rename the staged folder onto the final path (replacing a previous export). Idempotent."""
        if self._done:
            return self.path
        self._check_target()
        old: Path | None = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.{_random_suffix()}.old")
            os.rename(self.path, old)
        try:
            os.rename(self.tmp_path, self.path)
        except OSError:
            if old is not None:  # put the previous export back
                os.rename(old, self.path)
            raise
        self._done = True
        self._finalizer.detach()
        _fsync_dir(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Drop the staged folder; the final path is untouched. Idempotent."""
        if not self._done:
            self._done = True
            self._finalizer()


def only_entries(folder: Path, file_re: str | None = None, dir_re: str | None = None,
                 sub_file_re: str | None = None) -> bool:
    """True when every entry of ``folder`` is a file matching ``file_re`` or a folder matching ``dir_re`` whose
    entries are all files matching ``sub_file_re``: the test for "this is a previous export of ours"."""
    try:
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                if dir_re is None or not re.fullmatch(dir_re, entry.name):
                    return False
                if not only_entries(Path(entry.path), sub_file_re):
                    return False
            elif file_re is None or not re.fullmatch(file_re, entry.name) or entry.is_symlink():
                return False
    except OSError:
        return False
    return True
