"""Resumability: input checksums, done-markers, atomic per-video output folders, error files, the run lock.

Layout of the output folder::

    OUT/
      clip1/                 # complete outputs of a finished video, with done.json
        masks.json ...
        done.json            # the done-marker: checksum of the inputs and options, timings
      clip2.error.txt        # one line: why clip2 failed on the last run (removed once it succeeds)
      batch_summary.json     # the last run's summary
      .clip3.1a2b3c4d.tmp/   # a video being written (hidden; a killed run's leftovers are removed at start)
      .vidtrack-batch.lock   # held (flock) by the running batch

Why it survives kills: a worker writes a video's outputs and its ``done.json`` into a hidden staging folder
and renames it onto ``OUT/<id>`` only when everything is there. ``OUT/<id>`` therefore exists only complete,
with a marker. Replacing the outputs of a changed video takes two renames (old folder aside, new one in); a
kill between them leaves no ``OUT/<id>``, which a re-run simply redoes.

Why a re-run skips exactly the right videos: the marker stores a checksum of everything the outputs depend
on, i.e. the video bytes (all of them up to :data:`FULL_HASH_LIMIT`; beyond that size, mtime and 1 MiB from
the start, middle and end), the decoded prompts (so a re-saved prompts.json with the same content is not a
change, while a repainted mask PNG is), the options of :class:`~vidtrack.batch.manifest.JobOptions` and the
checkpoint's file sizes and mtimes. A video is skipped when ``OUT/<id>/done.json`` holds the same checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.types import Prompt

MARKER = "done.json"
ERROR_SUFFIX = ".error.txt"
SUMMARY = "batch_summary.json"
LOCK = ".vidtrack-batch.lock"
FULL_HASH_LIMIT = 64 * 2**20
"""Video files up to this size are hashed whole; bigger ones by size, mtime and three 1 MiB samples."""
_SAMPLE = 2**20
_STAGE_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|old)$")


def one_line(exc: BaseException) -> str:
    """An exception as one line; errors that are not user errors keep their type name."""
    from vidtrack.errors import VidtrackError

    text = " ".join(str(exc).split())
    if isinstance(exc, VidtrackError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------------------


def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * _SAMPLE), b""):
            h.update(chunk)


def video_fingerprint(source: str) -> dict[str, Any]:
    """What identifies a video's content: the sha256 of its bytes, or for files over
    :data:`FULL_HASH_LIMIT` size + mtime + a hash of three 1 MiB samples (reading hundreds of big files twice
    per run would cost more than the check saves). A frame folder: every file's name, size and mtime."""
    p = Path(source)
    if p.is_file():
        st = p.stat()
        h = hashlib.sha256()
        if st.st_size <= FULL_HASH_LIMIT:
            _hash_file(p, h)
            return {"size": st.st_size, "sha256": h.hexdigest()}
        with open(p, "rb") as f:
            for offset in (0, st.st_size // 2, st.st_size - _SAMPLE):
                f.seek(max(offset, 0))
                h.update(f.read(_SAMPLE))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "partial_sha256": h.hexdigest()}
    if p.is_dir():
        h = hashlib.sha256()
        for entry in sorted(p.iterdir()):
            if entry.is_file():
                s = entry.stat()
                h.update(f"{entry.name}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
        return {"folder_sha256": h.hexdigest()}
    return {"missing": source}


def prompts_digest(prompts: list[Prompt]) -> str:
    """sha256 of the prompts' content (frames, ids, mask pixels, boxes, points, labels), in a fixed order."""
    h = hashlib.sha256()
    for p in sorted(prompts, key=lambda p: (p.frame_idx, p.object_id, p.kind)):
        h.update(f"{p.frame_idx}:{p.object_id}:{p.kind}:{p.box}\n".encode())
        for arr in (p.mask, p.points, p.labels):
            if arr is None:
                h.update(b"-")
                continue
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.packbits(a).tobytes() if a.dtype == bool else a.tobytes())
    return h.hexdigest()


def checkpoint_fingerprint(path: str | None) -> Any:
    """Sizes and mtimes of the checkpoint file or folder: re-trained weights at the same path redo the videos."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        s = p.stat()
        return [p.name, s.st_size, s.st_mtime_ns]
    if p.is_dir():
        return [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                for f in sorted(p.rglob("*")) if f.is_file()]
    return ["missing", path]


def job_inputs(job: Any, prompts: list[Prompt]) -> dict[str, Any]:
    """Everything a video's outputs depend on, as JSON-ready data (stored in the marker)."""
    opts = asdict(job.options)
    opts["formats"] = sorted(job.options.formats)
    if not opts.get("tracking"):
        opts.pop("tracking", None)  # no tracker options: the same checksum as before the field existed
    return {
        "video": video_fingerprint(job.source),
        "prompts": prompts_digest(prompts),
        "options": opts,
        "checkpoint": checkpoint_fingerprint(job.options.checkpoint),
    }


def checksum(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Markers, staging, error files
# ---------------------------------------------------------------------------------------------------------


def read_marker(out_dir: Path, video_id: str) -> dict[str, Any] | None:
    """The done-marker of a finished video, or None (absent or unreadable: the video is simply redone)."""
    try:
        data = json.loads((out_dir / video_id / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_done(out_dir: Path, video_id: str, digest: str) -> dict[str, Any] | None:
    """The marker when ``OUT/<id>`` holds finished outputs of exactly these inputs, else None."""
    marker = read_marker(out_dir, video_id)
    return marker if marker is not None and marker.get("checksum") == digest else None


def new_stage(out_dir: Path, video_id: str) -> Path:
    """A hidden, empty staging folder beside the final one (same file system, so the commit is a rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".{video_id}.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    return stage


def commit_stage(stage: Path, out_dir: Path, video_id: str) -> Path:
    """Rename the staging folder onto ``OUT/<id>``, replacing previous batch outputs (never anything else)."""
    final = out_dir / video_id
    old: Path | None = None
    if final.exists() or final.is_symlink():
        if not final.is_dir() or final.is_symlink() or not (final / MARKER).is_file():
            raise InputError(f"cannot write {final}: it exists and is not a vidtrack batch output (no {MARKER}); "
                             "move it away or give the video another id")
        old = out_dir / f".{video_id}.{secrets.token_hex(4)}.old"
        os.rename(final, old)
    try:
        os.rename(stage, final)
    except OSError:
        if old is not None:
            os.rename(old, final)
        raise
    with contextlib.suppress(OSError):
        fd = os.open(out_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_json(path: Path, data: Any) -> None:
    from vidtrack.export import atomic_write

    with atomic_write(path) as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def record_error(out_dir: Path, video_id: str, message: str) -> Path:
    """Write ``OUT/<id>.error.txt``: the one-line reason of the failure."""
    from vidtrack.export import atomic_write

    path = out_dir / f"{video_id}{ERROR_SUFFIX}"
    with atomic_write(path) as f:
        f.write(" ".join(message.split()) + "\n")
    return path


def clear_error(out_dir: Path, video_id: str) -> None:
    with contextlib.suppress(OSError):
        (out_dir / f"{video_id}{ERROR_SUFFIX}").unlink()


def remove_stale_stages(out_dir: Path) -> int:
    """Delete staging folders a killed run left behind (only call while holding the run lock)."""
    n = 0
    if not out_dir.is_dir():
        return 0
    for entry in out_dir.iterdir():
        if _STAGE_RE.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            n += 1
    return n


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``OUT/.vidtrack-batch.lock`` for the run.

    Two batches writing the same folder would delete each other's staging folders; the kernel drops the lock
    when its holder dies, even by SIGKILL, so a killed run never blocks the next one.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    f: IO[str] = open(out_dir / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise InputError(f"another vidtrack batch (pid {holder}) is writing to {out_dir}; wait for it to "
                             "finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
