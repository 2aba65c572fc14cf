"""Random access to the frames of a video file, a folder of images or frames in memory.

An interactive session (:mod:`vidtrack.engines.sam2.interactive`) and the studio show and track any frame in
any order: a click on frame 57, a backward propagation, a scrub through the timeline. :func:`open_frames`
gives ``frame(i)``, exact for every ``i``:

* **video files** are indexed once when opened (the packets are demuxed, not decoded: their presentation
  timestamps, sorted, are the frames in display order); ``frame(i)`` seeks to the keyframe before frame i
  and decodes forward to it, keeping what it decoded on the way in a small cache, so that sequential
  reading (forward or backward) decodes each group of pictures about once. Reading in order continues the
  open decoder without seeking;
* **folders** read their i-th image file (natural order, as :class:`~vidtrack.sources.FolderSource` lists
  them);
* **arrays and lists** return their i-th item converted to RGB uint8.

Validation (missing path, unreadable file, frame sizes) is done by the streaming sources of
:mod:`vidtrack.sources`, so both ways of reading a video fail with the same one-line messages.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import av.container
import av.error
import numpy as np
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.sources import (
    ArraySource,
    FolderSource,
    VideoFileSource,
    _first_video_stream,
    _frame_to_rgb,
    _one_line,
    _pil_to_rgb,
    _to_rgb,
)

__all__ = ["FrameAccess", "open_frames"]

DEFAULT_CACHE_BYTES = 128 * 1024 * 1024
"""Decoded frames kept for re-reads: 128 MiB holds ~100 frames of 854x480, ~20 of 1920x1080."""


class FrameAccess(ABC):
    """A video's frames by index (0 .. ``num_frames - 1``), decoded on demand, with a small LRU cache."""

    def __init__(self, name: str, num_frames: int, height: int, width: int, fps: float | None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.name = name
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.fps = fps
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB (read-only: it may be shared with the cache)."""
        i = self._check_index(i)
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        return self._read(i)

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.num_frames))

    def close(self) -> None:
        self._cache.clear()
        self._cached = 0

    def __enter__(self) -> FrameAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- for subclasses ----------------------------------------------------------------------------------
    @abstractmethod
    def _read(self, i: int) -> np.ndarray:
        """Decode frame ``i`` (not in the cache); subclasses call :meth:`_keep` for what they decode."""

    def _keep(self, i: int, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] != (self.height, self.width):
            raise InputError(f"frame {i} of {self.name} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                             f"{self.width}x{self.height}; every frame of a video must have the same size")
        frame.setflags(write=False)
        if i in self._cache:
            return self._cache[i]
        self._cache[i] = frame
        self._cached += frame.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return frame

    def _check_index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise InputError(f"frame index must be an integer; got {i!r}")
        i = int(i)
        if not 0 <= i < self.num_frames:
            raise InputError(f"frame {i} does not exist: {self.name} has frames 0..{self.num_frames - 1}")
        return i


class _ArrayFrames(FrameAccess):
    def __init__(self, frames: np.ndarray | Sequence[Any], fps: float | None, cache_bytes: int) -> None:
        src = ArraySource(frames, fps=fps)  # validates shape, dtype and sizes up front
        h, w = src.probe_size()
        super().__init__(src.name, len(frames), h, w, fps, cache_bytes)
        self._frames = frames

    def _read(self, i: int) -> np.ndarray:
        frame = _to_rgb(self._frames[i], f"{self.name} frame {i}")
        if frame is self._frames[i]:
            frame = frame.copy()  # never freeze the caller's own array
        return self._keep(i, frame)


class _FolderFrames(FrameAccess):
    def __init__(self, path: Path, fps: float | None, cache_bytes: int) -> None:
        src = FolderSource(path, fps=fps)
        h, w = src.probe_size()
        self._files = src.files
        super().__init__(str(path), len(self._files), h, w, fps, cache_bytes)

    def _read(self, i: int) -> np.ndarray:
        file = self._files[i]
        try:
            with Image.open(file) as img:
                frame = _pil_to_rgb(img)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read frame image {file}: {_one_line(exc)}") from exc
        return self._keep(i, frame)


class _VideoFrames(FrameAccess):
    """A video file: presentation timestamps indexed at open; seek + decode forward on a jump."""

    def __init__(self, path: Path, cache_bytes: int) -> None:
        src = VideoFileSource(path)  # validates the file (header and first frame) with the usual messages
        h, w = src.probe_size()
        self._path = path
        pts = self._index(str(path))
        super().__init__(str(path), len(pts), h, w, src.fps, cache_bytes)
        self._pts = pts
        self._index_of = {p: k for k, p in enumerate(pts)}
        self._container: av.container.InputContainer | None = None
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next = -1  # index of the frame the open decoder yields next (-1: none open)

    @staticmethod
    def _index(name: str) -> list[int]:
        try:
            with av.open(name, mode="r") as container:
                stream = _first_video_stream(container, name)
                pts = [int(p.pts) for p in container.demux(stream) if p.pts is not None and p.size > 0]
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot index video {name}: {_one_line(exc)}; is it a video file FFmpeg can read?"
                             ) from exc
        if not pts:
            raise InputError(f"no frames in {name}")
        return sorted(set(pts))

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        if self._container is None:
            if not self._path.exists():
                raise InputError(f"video not found: {self.name} (was it moved or deleted?)")
            try:
                self._container = av.open(str(self._path), mode="r")
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"cannot decode video {self.name}: {_one_line(exc)}") from exc
        return self._container, _first_video_stream(self._container, self.name)

    def _read(self, i: int) -> np.ndarray:
        container, stream = self._open()
        if self._decoder is None or self._next != i:
            # jump: the keyframe at or before frame i, then decode forward (frames on the way are cached)
            try:
                container.seek(self._pts[i], stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"cannot seek to frame {i} of {self.name}: {_one_line(exc)}") from exc
            self._decoder = container.decode(stream)
            self._next = -1
        wanted: np.ndarray | None = None
        try:
            for frame in self._decoder:
                k = self._index_of.get(int(frame.pts)) if frame.pts is not None else None
                if k is None:
                    continue
                arr = self._keep(k, _frame_to_rgb(frame, (self.height, self.width)))
                self._next = k + 1
                if k == i:
                    wanted = arr
                    break
                if k > i:  # the seek landed past the frame: cannot happen with backward=True keyframes
                    break
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"error decoding frame {i} of {self.name}: {_one_line(exc)} "
                             "(the data may be truncated or corrupt)") from exc
        if wanted is None:
            self._decoder = None
            raise InputError(f"frame {i} of {self.name} could not be decoded (the file may be damaged)")
        return wanted

    def close(self) -> None:
        self._decoder = None
        if self._container is not None:
            self._container.close()
            self._container = None
        super().close()


def open_frames(video: Any, *, fps: float | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> FrameAccess:
    """Random access to ``video``: a video file path, a folder of .jpg/.png frames, a (T, H, W, 3) uint8 array
    or a list of frames. Raises :class:`InputError` (one line) for anything else or anything unreadable."""
    if isinstance(video, np.ndarray) or (isinstance(video, list | tuple) and not isinstance(video, str)):
        return _ArrayFrames(video, fps, cache_bytes)
    if isinstance(video, str | os.PathLike):
        path = Path(video)
        if not path.exists():
            raise InputError(f"video not found: {video} (check the path)")
        if path.is_dir():
            return _FolderFrames(path, fps, cache_bytes)
        if path.is_file():
            return _VideoFrames(path, cache_bytes)
        raise InputError(f"{video} is neither a video file nor a folder of frames; an interactive session "
                         "needs frames it can read again (not a live stream or a device)")
    raise InputError(f"cannot open {type(video).__name__} as a video; give a video file, a folder of frames, "
                     "a (T, H, W, 3) uint8 array or a list of frames")
