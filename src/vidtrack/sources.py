"""Frame sources: one way to read frames from every kind of input a user may hand to vidtrack.

Trackers only ever see ``(frame_idx, rgb_uint8_array)`` pairs. Everything that differs between a video
file, a folder of JPEGs, an in-memory array, a Python generator, a webcam and an RTSP camera (how to open
it, whether it can be re-read, whether its length is known, what goes wrong with it) is handled here, so
that the engines need no special cases and every user mistake becomes one :class:`~vidtrack.errors.InputError`
with a one-line message.

Design points:

* Frames are decoded lazily, one at a time; no source ever holds a whole decoded video (an array source
  of course holds what the caller gave it).
* ``frame_idx`` is always the index in the *original* input, so results can be matched back to the video
  whatever ``start``/``end``/``stride`` were used.
* Every yielded frame is a fresh, C-contiguous ``(H, W, 3)`` ``uint8`` RGB array that the caller owns:
  consumers may draw on it or hand it to torch without copying again.
* Files, folders and arrays can be iterated many times (each ``__iter__`` starts over, re-opening the
  container); iterators, live streams and caller-owned PyAV containers can be iterated once.

How an input is classified is decided by :func:`open_source`; see its docstring.
"""

from __future__ import annotations

import operator
import os
import re
import stat
import sys
import time
import urllib.parse
import urllib.request
import weakref
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.container
import av.error
import numpy as np
from PIL import Image

from vidtrack.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIVE_URL_SCHEMES",
    "NETWORK_TIMEOUT_S",
    "ArraySource",
    "ContainerSource",
    "FolderSource",
    "FrameSource",
    "IteratorSource",
    "LiveStreamSource",
    "VideoFileSource",
    "natural_sort_key",
    "open_source",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})
"""Suffixes (compared case-insensitively) of the files a frame folder is made of."""

LIVE_URL_SCHEMES: frozenset[str] = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "rtp", "srt", "udp", "tcp", "http", "https"}
)
"""URL schemes opened as live streams through FFmpeg. ``file:`` is deliberately absent: it is a path."""

NETWORK_TIMEOUT_S: tuple[float, float] = (15.0, 30.0)
"""(open, read) timeouts for network streams, so an unreachable camera fails instead of hanging forever.

FIFOs and local devices get no timeout: waiting for a writer or a camera to start is legitimate there."""



def network_timeout() -> tuple[float, float]:
    """:data:`NETWORK_TIMEOUT_S`, or ``VIDTRACK_STREAM_TIMEOUT`` seconds for both when that is set (a slow
    link may need more; a test, less)."""
    value = os.environ.get("VIDTRACK_STREAM_TIMEOUT", "").strip()
    if not value:
        return NETWORK_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise InputError(f"VIDTRACK_STREAM_TIMEOUT must be a number of seconds; got {value!r}") from None
    if seconds <= 0:
        raise InputError(f"VIDTRACK_STREAM_TIMEOUT must be > 0 seconds; got {value!r}")
    return (seconds, seconds)


# FFmpeg demuxer names of capture devices and network protocols, used to decide whether a caller-owned
# container is live.
_LIVE_FORMAT_NAMES = frozenset(
    {"rtsp", "rtp", "sdp", "v4l2", "video4linux2", "avfoundation", "dshow", "gdigrab", "x11grab", "lavfi"}
)
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
_PIPE_RE = re.compile(r"^pipe:\d*$")
_V4L2_NAME_RE = re.compile(r"^video\d+$")
_DIGITS_RE = re.compile(r"(\d+)")


def _one_line(exc: BaseException) -> str:
    """The exception's message squeezed onto one line, because every InputError message is one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def natural_sort_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers).

    Frame folders are rarely zero-padded consistently, and plain string order would scramble them. The
    split always alternates text and number, so tuples of two keys compare like with like. Text is
    case-folded; the raw name breaks ties so the order is total and deterministic.
    """
    parts = _DIGITS_RE.split(name)
    key: list[str | int] = [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)]
    return tuple(key), name


def _redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, because source names end up in logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------------
# Range (start / end / stride)
# --------------------------------------------------------------------------------------------------


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{what} must be an integer; got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"{what} must be an integer; got {value!r}") from None


@dataclass(frozen=True)
class _Range:
    """Which original frame indices a source yields: ``range(start, end, stride)`` clipped to the input."""

    start: int = 0
    end: int | None = None
    stride: int = 1

    @classmethod
    def make(cls, stride: object, start: object, end: object) -> _Range:
        """Validate the user's options; raises InputError with what to pass instead."""
        stride_i = _as_int(stride, "stride")
        start_i = _as_int(start, "start")
        end_i = None if end is None else _as_int(end, "end")
        if stride_i < 1:
            raise InputError(f"stride must be >= 1 (1 reads every frame); got {stride_i}")
        if start_i < 0:
            raise InputError(f"start must be >= 0 (an index of the first frame to read); got {start_i}")
        if end_i is not None and end_i <= start_i:
            raise InputError(
                f"end must be greater than start (end is exclusive; None reads to the last frame); "
                f"got start={start_i}, end={end_i}"
            )
        return cls(start_i, end_i, stride_i)

    @property
    def is_default(self) -> bool:
        return self.start == 0 and self.end is None and self.stride == 1

    def indices(self, total: int) -> range:
        """The selected indices of an input of ``total`` frames."""
        stop = total if self.end is None else min(self.end, total)
        return range(self.start, stop, self.stride)

    def selects(self, idx: int) -> bool:
        return idx >= self.start and (idx - self.start) % self.stride == 0 and not self.done(idx)

    def done(self, idx: int) -> bool:
        """True once ``idx`` is at or past ``end``: reading further is wasted work."""
        return self.end is not None and idx >= self.end

    def check_nonempty(self, total: int, name: str) -> None:
        """Fail early when the options select nothing from an input of known length."""
        if total == 0:
            raise InputError(f"no frames in {name}")
        if len(self.indices(total)) == 0:
            raise InputError(
                f"start={self.start} is past the end of {name} ({total} frames); pass a start below the frame count"
            )

    def fail_if_nothing_read(self, read: int, name: str) -> None:
        """After a pass over an input of unknown length that yielded nothing, say why."""
        if read == 0:
            raise InputError(f"no frames in {name}")
        raise InputError(
            f"start={self.start} is past the end of {name} (only {read} frames); pass a start below the frame count"
        )


# --------------------------------------------------------------------------------------------------
# Frame conversion
# --------------------------------------------------------------------------------------------------

_FRAME_TYPES_HINT = "an (H, W, 3) uint8 RGB numpy array, an (H, W) uint8 grayscale array or a PIL image"


def _array_frame_size(arr: np.ndarray, where: str) -> tuple[int, int]:
    """(height, width) of an array frame, validating dtype and layout without converting anything."""
    if arr.dtype != np.uint8:
        hint = (
            "; for floats in [0, 1] use (frame * 255).round().astype(np.uint8)"
            if np.issubdtype(arr.dtype, np.floating)
            else "; convert with frame.astype(np.uint8) if the values are 0-255"
        )
        raise InputError(f"{where} has dtype {arr.dtype}; expected uint8 RGB values 0-255{hint}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(f"{where} is empty (shape {arr.shape})")
        return int(arr.shape[0]), int(arr.shape[1])
    hint = ""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        hint = "; it looks channel-first, transpose it to (H, W, C) with frame.transpose(1, 2, 0)"
    raise InputError(f"{where} has shape {arr.shape}; expected {_FRAME_TYPES_HINT}{hint}")


def _frame_size(item: object, where: str) -> tuple[int, int]:
    """(height, width) of one user-supplied frame, read from metadata only (no pixel conversion)."""
    if isinstance(item, Image.Image):
        width, height = item.size
        if width == 0 or height == 0:
            raise InputError(f"{where} is an empty image")
        return height, width
    if isinstance(item, np.ndarray):
        return _array_frame_size(item, where)
    if hasattr(item, "__array__"):  # torch CPU tensors, xarray, ...
        return _array_frame_size(np.asarray(item), where)
    raise InputError(f"{where} is a {type(item).__name__}; expected {_FRAME_TYPES_HINT}")


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """An RGB uint8 copy of any PIL image (palette, grayscale, 16-bit grayscale, RGBA, CMYK ...)."""
    if img.mode.startswith("I;16"):
        # convert("RGB") would clip 16-bit values to 255 rather than scale them.
        gray = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the direct P -> RGB conversion warns when a palette has transparency
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8, order="C", copy=True)


def _to_rgb(item: object, where: str) -> np.ndarray:
    """A fresh C-contiguous (H, W, 3) uint8 RGB array from one user-supplied frame.

    A copy is made even when the input already has the right layout, so that consumers drawing on a frame
    never modify the caller's data.
    """
    _frame_size(item, where)
    if isinstance(item, Image.Image):
        return _pil_to_rgb(item)
    arr = np.asarray(item)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]  # RGBA: drop alpha, as for RGBA PNGs
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


# --------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------


class FrameSource(ABC):
    """Frames of one input, yielded lazily as ``(frame_idx, rgb_frame)``.

    Attributes:
        name: path, (password-redacted) URL, ``"array"``, ``"list"`` or ``"iterator"``; used in messages.
        num_frames: number of frames that iteration yields (after start/end/stride), or None when it is
            not known without reading everything (iterators, live streams, containers without a count).
        fps: the input's frame rate divided by stride, when known.
        is_live: True for cameras and network streams (and pipes): frames arrive in real time, the length
            is unknown, and the source can be read once.
    """

    name: str
    num_frames: int | None
    fps: float | None
    is_live: bool

    @property
    def first_index(self) -> int:
        """The lowest source frame index iteration may yield (the ``start`` it was opened with): the first
        frame of the video as far as tracking is concerned, e.g. for which objects a backward pass follows."""
        rng = getattr(self, "_range", None)
        return 0 if rng is None else int(rng.start)

    def truncation(self) -> tuple[int, int] | None:
        """``(expected, decoded)`` frame counts when the last pass ended early (a truncated video file)."""
        return None

    def planned_indices(self) -> range | None:
        """The source frame indices that iteration will yield, when they are known in advance (files with a
        frame count, folders, arrays); None otherwise. Lets callers reject a prompt on a frame that will never
        come before any work is done."""
        rng = getattr(self, "_range", None)
        if rng is None or self.num_frames is None:
            return None
        return range(rng.start, rng.start + self.num_frames * rng.stride, rng.stride)

    def __init__(
        self,
        name: str,
        *,
        num_frames: int | None,
        fps: float | None,
        is_live: bool,
        single_pass: bool,
    ) -> None:
        self.name = name
        self.num_frames = num_frames
        self.fps = fps
        self.is_live = is_live
        self._single_pass = single_pass
        self._consumed = False
        self._closed = False
        # Passes in progress, so close() can end them: closing a container under a suspended decoder
        # would crash FFmpeg on the next read, whereas closing the generator runs its cleanup first.
        self._passes: weakref.WeakSet[Generator[tuple[int, np.ndarray], None, None]] = weakref.WeakSet()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Start a pass over the frames (a fresh one for re-readable sources).

        The checks run here, not lazily in a generator, so reading a single-pass source twice fails at the
        ``for`` statement rather than silently yielding nothing.
        """
        if self._closed:
            raise InputError(f"frame source {self.name} is closed; open it again with open_source()")
        if self._single_pass:
            if self._consumed:
                raise InputError(
                    f"{self.name} can be read only once ({self._kind()}); to read frames again pass a "
                    "file, folder, list or array"
                )
            self._consumed = True
        frames = self._iter_frames()
        self._passes.add(frames)
        return frames

    @abstractmethod
    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        """Yield the selected frames; the base class has already checked the source may be read."""

    @abstractmethod
    def probe_size(self) -> tuple[int, int]:
        """(height, width) of the frames, found as cheaply as the input allows."""

    def _kind(self) -> str:
        return "a live stream" if self.is_live else "a single-pass source"

    def close(self) -> None:
        """Release files, containers and devices. Idempotent; iterating afterwards raises InputError.

        Passes in progress are ended (their iterators stop); subclasses release their own resources
        after calling this.
        """
        for frames in list(self._passes):
            frames.close()
        self._passes.clear()
        self._closed = True

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_frames={self.num_frames}, fps={self.fps}, "
            f"is_live={self.is_live})"
        )


# --------------------------------------------------------------------------------------------------
# PyAV sources: files, live streams, caller-owned containers
# --------------------------------------------------------------------------------------------------


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate
    if rate is None or rate <= 0:
        return None
    return float(rate)


def _first_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise InputError(f"no video stream in {name} (is it an audio-only or empty file?)")
    return container.streams.video[0]


def _frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """RGB array of a decoded frame, scaled to ``size`` if the stream changed resolution mid-way.

    Trackers need one frame size for a whole video, and probe_size promises it; rescaling the rare
    mid-stream resolution change is better than failing hours into a live stream.
    """
    if size is not None and (frame.height, frame.width) != size:
        arr = frame.to_ndarray(format="rgb24", height=size[0], width=size[1])
    else:
        arr = frame.to_ndarray(format="rgb24")
    # Rows of odd-width frames are padded in FFmpeg's buffers, so the array is a strided view.
    return np.ascontiguousarray(arr)


class _PyAVSource(FrameSource):
    """Shared decoding loop of the sources read through PyAV/FFmpeg."""

    def __init__(
        self,
        name: str,
        rng: _Range,
        *,
        num_frames: int | None,
        fps: float | None,
        is_live: bool,
        single_pass: bool,
    ) -> None:
        super().__init__(name, num_frames=num_frames, fps=fps, is_live=is_live, single_pass=single_pass)
        self._range = rng
        self._size: tuple[int, int] | None = None
        self._target = name  # what FFmpeg was given; differs from name when a password was redacted
        self._truncation: tuple[int, int] | None = None

    def truncation(self) -> tuple[int, int] | None:
        """``(expected, decoded)`` when the last pass ended before the frame count the container declares (a
        truncated or damaged file: FFmpeg stops quietly, or fails on a cut packet); None otherwise."""
        return self._truncation

    def _reason(self, exc: BaseException) -> str:
        """FFmpeg's message on one line, with the URL's password redacted (FFmpeg repeats the URL)."""
        return _one_line(exc).replace(self._target, self.name)

    def _decode(
        self, frames: Iterator[av.VideoFrame], pending: list[av.VideoFrame]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Convert decoded ``frames``, skipping unselected ones without converting them, stopping at ``end``.

        ``pending`` holds frames already decoded while probing (a peeked live frame); they come first.
        """
        rng = self._range
        idx = -1
        yielded = 0
        expected = None if self.is_live else self.num_frames
        self._truncation = None
        while True:
            if pending:
                frame = pending.pop(0)
            else:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except (av.error.FFmpegError, OSError) as exc:
                    if expected is not None and yielded > 0:
                        break  # a cut or damaged file: keep what was decoded, reported below as truncated
                    raise self._decode_error(exc, idx + 1) from exc
            idx += 1
            if rng.done(idx):
                expected = None  # stopped at --end: not a short file
                break
            if not rng.selects(idx):
                continue
            if self._size is None:
                self._size = (frame.height, frame.width)
            yield idx, _frame_to_rgb(frame, self._size)
            yielded += 1
        if yielded == 0:
            rng.fail_if_nothing_read(idx + 1, self.name)
        if expected is not None and yielded < expected:
            self._truncation = (expected, yielded)

    def _decode_error(self, exc: BaseException, idx: int) -> InputError:
        if self.is_live and getattr(exc, "errno", None) == _AVERROR_EXIT:
            return InputError(f"no video from {self.name}: frames stopped arriving after frame {idx} (timed out); "
                              "check that it is still streaming (VIDTRACK_STREAM_TIMEOUT=SECONDS waits longer)")
        if idx == 0 and self.is_live:
            return InputError(
                f"cannot decode live stream {self.name}: {self._reason(exc)}; is it a video stream FFmpeg can read?"
            )
        if idx == 0:
            return InputError(
                f"cannot decode video {self.name}: {self._reason(exc)}; is it a video file PyAV/FFmpeg can read?"
            )
        what = "stream" if self.is_live else "video"
        return InputError(
            f"error decoding frame {idx} of {what} {self.name}: {self._reason(exc)} "
            "(the data may be truncated or corrupt)"
        )


class VideoFileSource(_PyAVSource):
    """A video file in any container FFmpeg reads (mp4, mkv, avi, mov, webm, ...).

    The file is opened once at construction to validate it (header and first frame), so a corrupt or
    empty file fails in :func:`open_source` rather than deep inside a tracking run. Each iteration then
    opens its own container, so passes are independent and may even run concurrently.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, stride: int = 1, start: int = 0, end: int | None = None
    ) -> None:
        rng = _Range.make(stride, start, end)
        self._path = Path(path)
        name = str(path)
        if not self._path.exists():
            raise InputError(f"video not found: {name} (check the path)")
        container = self._open(name)
        try:
            stream = _first_video_stream(container, name)
            total = stream.frames if stream.frames and stream.frames > 0 else None
            fps = _stream_fps(stream)
            header = (stream.codec_context.height, stream.codec_context.width)
            try:
                first = next(container.decode(stream), None)
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(
                    f"cannot decode video {name}: {_one_line(exc)}; is it a video file PyAV/FFmpeg can read?"
                ) from exc
        finally:
            container.close()
        if first is None:
            raise InputError(f"no frames in {name}")
        if total is not None:
            rng.check_nonempty(total, name)
        super().__init__(
            name,
            rng,
            num_frames=None if total is None else len(rng.indices(total)),
            fps=None if fps is None else fps / rng.stride,
            is_live=False,
            single_pass=False,
        )
        # The decoded first frame is the ground truth; the header is only used if they agree.
        decoded = (first.height, first.width)
        self._size = header if header == decoded else decoded

    def _open(self, name: str) -> av.container.InputContainer:
        try:
            return av.open(str(self._path), mode="r")
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(
                f"cannot decode video {name}: {_one_line(exc)}; is it a video file PyAV/FFmpeg can read?"
            ) from exc

    def probe_size(self) -> tuple[int, int]:
        """(height, width) from the stream header, confirmed by the first frame decoded at open time."""
        assert self._size is not None
        return self._size

    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        # The container is opened on the first next(), so an iterator that is created and dropped
        # unstarted leaves nothing open; one abandoned mid-way (or ended by close()) is closed by the
        # finally, after the decoder that reads from it has been dropped.
        if not self._path.exists():
            raise InputError(f"video not found: {self.name} (was it moved or deleted?)")
        container = self._open(self.name)
        try:
            stream = _first_video_stream(container, self.name)
            stream.thread_type = "AUTO"
            yield from self._decode(container.decode(stream), [])
        finally:
            container.close()


class _SinglePassPyAVSource(_PyAVSource):
    """A container opened once and decoded once: live streams and caller-owned containers."""

    def __init__(
        self,
        name: str,
        container: av.container.InputContainer,
        rng: _Range,
        *,
        is_live: bool,
        owns_container: bool,
    ) -> None:
        try:
            stream = _first_video_stream(container, name)
        except InputError:
            if owns_container:
                container.close()
            raise
        fps = _stream_fps(stream)
        total = stream.frames if (not is_live and stream.frames and stream.frames > 0) else None
        if total is not None:
            rng.check_nonempty(total, name)
        super().__init__(
            name,
            rng,
            num_frames=None if total is None else len(rng.indices(total)),
            fps=None if fps is None else fps / rng.stride,
            is_live=is_live,
            single_pass=True,
        )
        self._container: av.container.InputContainer | None = container
        self._stream = stream
        self._owns_container = owns_container
        self._pending: list[av.VideoFrame] = []
        header = (stream.codec_context.height, stream.codec_context.width)
        self._size = header if header[0] > 0 and header[1] > 0 else None
        if owns_container:
            # Frame threading delays every frame by several frames' worth of latency; live sources want
            # frames as soon as they arrive, so they use slice threading only. A caller's container keeps
            # the caller's setting (and its codec may already be open, when it cannot be changed).
            stream.thread_type = "SLICE" if is_live else "AUTO"
        # One decode iterator shared by probe_size and iteration, so frames the decoder has buffered
        # after a peek are not lost.
        self._frames: Iterator[av.VideoFrame] = container.decode(stream)

    def probe_size(self) -> tuple[int, int]:
        """(height, width) from the stream header; if the header lacks it, decode one frame and keep it."""
        if self._size is not None:
            return self._size
        if self._container is None or self._consumed:
            raise InputError(f"cannot probe the frame size of {self.name}: it has already been read")
        try:
            frame = next(self._frames, None)
        except (av.error.FFmpegError, OSError) as exc:
            raise self._decode_error(exc, 0) from exc
        if frame is None:
            raise InputError(f"no frames in {self.name}")
        self._pending.append(frame)
        self._size = (frame.height, frame.width)
        return self._size

    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        try:
            yield from self._decode(self._frames, self._pending)
        finally:
            self._release()

    def _release(self) -> None:
        # Drop the decoder before closing the container it reads from.
        frames, self._frames = self._frames, iter(())
        closer = getattr(frames, "close", None)
        if callable(closer):
            closer()
        del frames
        self._pending.clear()
        if self._container is not None and self._owns_container:
            self._container.close()
        self._container = None

    def close(self) -> None:
        """Close the stream or device (not a container the caller passed in: it is the caller's)."""
        super().close()
        self._release()


_AVERROR_EXIT = 1414092869  # FFmpeg's AVERROR_EXIT: PyAV's timeout callback stopped a blocking open/read
_AVERROR_INVALIDDATA = 1094995529


def _live_open_error(exc: BaseException, shown: str, target: str, timeout: float | tuple[float, float] | None,
                     elapsed: float) -> InputError:
    """One plain-words line for a stream that could not be opened: a timeout says so, not FFmpeg's
    "Immediate exit requested" or "Invalid data found" (what FFmpeg reports when nothing arrived)."""
    limit = timeout[0] if isinstance(timeout, tuple) else timeout
    code = getattr(exc, "errno", None)
    if code == _AVERROR_EXIT or (limit is not None and elapsed >= 0.9 * limit):
        return InputError(
            f"no video from {shown}: nothing arrived within {elapsed:.0f} s (timed out); check the address and "
            "that something is streaming there (VIDTRACK_STREAM_TIMEOUT=SECONDS waits longer)"
        )
    if code == _AVERROR_INVALIDDATA:
        return InputError(
            f"cannot open live stream {shown}: it answered, but not with a video stream FFmpeg can read (or closed "
            "the connection); check the address, path and protocol"
        )
    return InputError(
        f"cannot open live stream {shown}: {_one_line(exc).replace(target, shown)}; "
        "check the address/device and that it is streaming"
    )


class LiveStreamSource(_SinglePassPyAVSource):
    """A camera, network stream, FIFO or pipe: frames in real time, length unknown, read once.

    The connection is opened at construction so that an unreachable camera fails in :func:`open_source`
    and the frame size is known from the stream header before the first frame is read.
    """

    def __init__(
        self,
        target: str,
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
        format: str | None = None,
        options: dict[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        name: str | None = None,
    ) -> None:
        rng = _Range.make(stride, start, end)
        shown = name or _redact_url(target)
        started = time.monotonic()
        try:
            container = av.open(target, mode="r", format=format, container_options=options, timeout=timeout)
        except (av.error.FFmpegError, OSError) as exc:
            raise _live_open_error(exc, shown, target, timeout, time.monotonic() - started) from exc
        super().__init__(shown, container, rng, is_live=True, owns_container=True)
        self._target = target


class ContainerSource(_SinglePassPyAVSource):
    """An ``av.container.InputContainer`` the caller already opened (custom options, file-like input).

    Read once, from wherever the container currently is (frame 0 is the next frame it decodes), and
    never closed here: the caller owns it. It counts as live when its demuxer is a capture device or a
    network protocol.
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        rng = _Range.make(stride, start, end)
        format_names = set(container.format.name.split(","))
        is_live = bool(format_names & _LIVE_FORMAT_NAMES)
        url = str(container.name)
        match = _URL_RE.match(url)
        if match and match.group("scheme").lower() in LIVE_URL_SCHEMES:
            is_live = True
        super().__init__(_redact_url(url), container, rng, is_live=is_live, owns_container=False)
        self._target = url


# --------------------------------------------------------------------------------------------------
# Folder of frames
# --------------------------------------------------------------------------------------------------


class FolderSource(FrameSource):
    """A folder of ``.jpg``/``.jpeg``/``.png`` frames, in natural order (``2.png`` before ``10.png``).

    Hidden files are skipped: macOS leaves ``._frame.jpg`` resource forks next to real frames, and they
    are not images. Only the frame list is read at construction; images are decoded one at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
        fps: float | None = None,
    ) -> None:
        rng = _Range.make(stride, start, end)
        folder = Path(path)
        name = str(path)
        if not folder.is_dir():
            raise InputError(f"folder not found: {name} (check the path)")
        try:
            entries = [
                e.name
                for e in os.scandir(folder)
                if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
            ]
        except OSError as exc:
            raise InputError(f"cannot list folder {name}: {_one_line(exc)}") from exc
        if not entries:
            raise InputError(f"folder {name} has no .jpg/.jpeg/.png frames")
        entries.sort(key=natural_sort_key)
        rng.check_nonempty(len(entries), name)
        self._files = [folder / e for e in entries]
        self._range = rng
        super().__init__(
            name,
            num_frames=len(rng.indices(len(entries))),
            fps=None if fps is None else fps / rng.stride,
            is_live=False,
            single_pass=False,
        )
        self._size = self._read_size(self._files[0])

    @staticmethod
    def _read_size(file: Path) -> tuple[int, int]:
        """(height, width) from the image header, without decoding pixels."""
        try:
            with Image.open(file) as img:
                width, height = img.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read frame image {file}: {_one_line(exc)}") from exc
        return height, width

    @property
    def files(self) -> list[Path]:
        """All frame files of the folder in natural order (before start/end/stride)."""
        return list(self._files)

    def probe_size(self) -> tuple[int, int]:
        """(height, width) of the first image in the folder (header only)."""
        return self._size

    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        for idx in self._range.indices(len(self._files)):
            file = self._files[idx]
            try:
                with Image.open(file) as img:
                    frame = _pil_to_rgb(img)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise InputError(f"cannot read frame image {file}: {_one_line(exc)}") from exc
            if frame.shape[:2] != self._size:
                raise InputError(
                    f"frame image {file} is {frame.shape[1]}x{frame.shape[0]} but {self._files[0].name} is "
                    f"{self._size[1]}x{self._size[0]}; all frames of a folder must have the same size"
                )
            yield idx, frame


# --------------------------------------------------------------------------------------------------
# In-memory frames
# --------------------------------------------------------------------------------------------------


class ArraySource(FrameSource):
    """Frames already in memory: a ``(T, H, W, 3)`` uint8 array, or a list/tuple of frames.

    List items may be ``(H, W, 3)`` uint8 arrays, ``(H, W)`` or ``(H, W, 1)`` grayscale, RGBA (alpha is
    dropped) or PIL images of any mode. Every item's dtype and size is checked up front (metadata only,
    so it is cheap), so a bad frame fails in :func:`open_source`; pixels are converted lazily.
    """

    def __init__(
        self,
        frames: np.ndarray | Sequence[Any],
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
        fps: float | None = None,
    ) -> None:
        rng = _Range.make(stride, start, end)
        if isinstance(frames, np.ndarray):
            name = "array"
            self._size = self._check_array(frames)
        else:
            name = "list"
            self._size = self._check_sequence(frames)
        rng.check_nonempty(len(frames), name)
        self._frames = frames
        self._range = rng
        super().__init__(
            name,
            num_frames=len(rng.indices(len(frames))),
            fps=None if fps is None else fps / rng.stride,
            is_live=False,
            single_pass=False,
        )

    @staticmethod
    def _check_array(frames: np.ndarray) -> tuple[int, int]:
        if frames.ndim == 3 and frames.shape[-1] in (3, 4):
            raise InputError(
                f"array of shape {frames.shape} looks like a single frame; pass a (T, H, W, 3) array "
                "(e.g. frame[None]) or a list of frames"
            )
        if frames.ndim not in (3, 4):
            raise InputError(
                f"array of shape {frames.shape} is not a video; expected (T, H, W, 3) uint8 RGB "
                "or (T, H, W) uint8 grayscale"
            )
        if len(frames) == 0:
            raise InputError("no frames in array (its first dimension is 0)")
        return _array_frame_size(frames[0], "array frame 0")

    @staticmethod
    def _check_sequence(frames: Sequence[Any]) -> tuple[int, int]:
        if len(frames) == 0:
            raise InputError("no frames in list (it is empty)")
        size = _frame_size(frames[0], "frame 0 of the list")
        for i, item in enumerate(frames):
            got = _frame_size(item, f"frame {i} of the list")
            if got != size:
                raise InputError(
                    f"frame {i} of the list is {got[1]}x{got[0]} but frame 0 is {size[1]}x{size[0]}; "
                    "all frames must have the same size"
                )
        return size

    def probe_size(self) -> tuple[int, int]:
        """(height, width) from the array shape or the first frame's metadata."""
        return self._size

    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        kind = self.name
        for idx in self._range.indices(len(self._frames)):
            yield idx, _to_rgb(self._frames[idx], f"{kind} frame {idx}")


class IteratorSource(FrameSource):
    """Frames from any other iterable (typically a generator): read once, length unknown.

    :meth:`probe_size` may need to pull the first frame; it is kept and yielded first, so peeking never
    loses a frame. Frames are validated as they arrive and must all have the first frame's size.
    """

    def __init__(
        self,
        frames: Iterable[Any],
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
        fps: float | None = None,
    ) -> None:
        rng = _Range.make(stride, start, end)
        self._it: Iterator[Any] = iter(frames)
        self._range = rng
        self._peeked: list[Any] = []
        self._size: tuple[int, int] | None = None
        super().__init__(
            "iterator",
            num_frames=None,
            fps=None if fps is None else fps / rng.stride,
            is_live=False,
            single_pass=True,
        )

    def _kind(self) -> str:
        return "it is an iterator"

    def probe_size(self) -> tuple[int, int]:
        """(height, width) of the first frame, pulled from the iterator and kept for iteration."""
        if self._size is None:
            if self._consumed:
                raise InputError("cannot probe the frame size of iterator: it has already been read")
            try:
                first = next(self._it)
            except StopIteration:
                raise InputError("no frames in iterator (it is empty)") from None
            self._size = _frame_size(first, "iterator frame 0")
            self._peeked.append(first)
        return self._size

    def _iter_frames(self) -> Generator[tuple[int, np.ndarray], None, None]:
        rng = self._range
        idx = -1
        yielded = 0
        while True:
            if self._peeked:
                item = self._peeked.pop(0)
            else:
                try:
                    item = next(self._it)
                except StopIteration:
                    break
            idx += 1
            if rng.done(idx):
                break
            where = f"iterator frame {idx}"
            size = _frame_size(item, where)  # validated even when skipped, so errors do not depend on stride
            if self._size is None:
                self._size = size
            elif size != self._size:
                raise InputError(
                    f"{where} is {size[1]}x{size[0]} but frame 0 is {self._size[1]}x{self._size[0]}; "
                    "all frames must have the same size"
                )
            if not rng.selects(idx):
                continue
            yield idx, _to_rgb(item, where)
            yielded += 1
        if yielded == 0:
            rng.fail_if_nothing_read(idx + 1, self.name)

    def close(self) -> None:
        """Close the underlying generator (running its ``finally`` blocks) if it has a ``close``."""
        super().close()
        closer = getattr(self._it, "close", None)
        if callable(closer):
            closer()
        self._peeked.clear()


# --------------------------------------------------------------------------------------------------
# open_source
# --------------------------------------------------------------------------------------------------


def _camera_device(index: int) -> tuple[str, str, str]:
    """(target, format, name) of camera number ``index`` on this platform."""
    if index < 0:
        raise InputError(f"camera index must be >= 0; got {index}")
    if sys.platform.startswith("linux"):
        device = f"/dev/video{index}"
        return device, "v4l2", device
    if sys.platform == "darwin":
        return f"{index}:none", "avfoundation", f"camera {index}"
    raise InputError(
        f"camera numbers are supported on Linux and macOS only; pass the device as FFmpeg names it, "
        f"e.g. an av.open(..., format='dshow') container (camera {index})"
    )


def _open_camera(index: int, rng: _Range) -> FrameSource:
    """Camera number ``index`` (``0``, or the string ``"0"`` from the command line)."""
    target, fmt, name = _camera_device(index)
    if fmt == "v4l2" and not Path(target).exists():
        raise InputError(f"no camera {index} ({target} does not exist; is a camera connected? list them with: "
                         "ls /dev/video*)")
    return LiveStreamSource(target, format=fmt, name=name, stride=rng.stride, start=rng.start, end=rng.end)


def _open_path(path: Path, shown: str, rng: _Range) -> FrameSource:
    """Classify an existing or missing local path."""
    if not path.exists():
        if _V4L2_NAME_RE.match(path.name) and str(path.parent) == "/dev":
            raise InputError(f"no camera {shown} (it does not exist; is a camera connected? list them with: "
                             "ls /dev/video*)")
        raise InputError(f"video not found: {shown} (check the path)")
    if path.is_dir():
        return FolderSource(path, stride=rng.stride, start=rng.start, end=rng.end)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read {shown}: {_one_line(exc)}") from exc
    if stat.S_ISREG(mode):
        return VideoFileSource(path, stride=rng.stride, start=rng.start, end=rng.end)
    # Not a regular file or folder: a FIFO, a character device (camera), a socket or /dev/stdin on a
    # pipe. Such inputs produce data in real time, cannot be rewound, and have no known length, which is
    # exactly what a live source is.
    fmt = None
    if stat.S_ISCHR(mode) and _V4L2_NAME_RE.match(path.resolve().name):
        fmt = "v4l2"
    return LiveStreamSource(str(path), stride=rng.stride, start=rng.start, end=rng.end, format=fmt, name=shown)


def _file_url_to_path(text: str) -> Path:
    """``file:///a/b%20c.mp4`` or ``file:rel.mp4`` -> a local path (``file:`` is a path, not a stream)."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.netloc not in ("", "localhost"):
        raise InputError(f"cannot open {text}: file URLs on another host are not supported; copy the file locally")
    return Path(urllib.request.url2pathname(parsed.path))


def open_source(
    source: object,
    *,
    stride: int = 1,
    start: int = 0,
    end: int | None = None,
) -> FrameSource:
    """Open any supported input as a :class:`FrameSource`.

    ``start``/``end``/``stride`` select original frame indices ``range(start, end, stride)`` (``end``
    exclusive, None for all); yielded ``frame_idx`` values are those original indices.

    ``source`` is classified as:

    * a :class:`FrameSource`: returned unchanged (only with the default start/end/stride; a source that is
      already open cannot be re-ranged, so the options are refused rather than silently ignored);
    * an ``av.container.InputContainer``: decoded once, never closed here (:class:`ContainerSource`);
    * an ``int`` N: camera N (``/dev/videoN`` through v4l2 on Linux, AVFoundation on macOS);
    * a ``str``/``PathLike``:

      - ``scheme://...`` with a scheme in :data:`LIVE_URL_SCHEMES` or ``pipe:N``: a live stream
        (``rtsp`` over TCP, network timeouts :data:`NETWORK_TIMEOUT_S`); other schemes are refused;
      - ``file:...``: the local path it names (an existing path of that literal name wins);
      - a folder: its ``.jpg``/``.jpeg``/``.png`` frames (:class:`FolderSource`);
      - a regular file: a video file (:class:`VideoFileSource`);
      - anything else that exists (a FIFO, a character device such as ``/dev/video0``, a socket,
        ``/dev/stdin`` fed by a pipe): a live stream (:class:`LiveStreamSource`), since such inputs can be
        read only once, in real time;

    * a numpy array ``(T, H, W, 3)`` or a list/tuple of frames (:class:`ArraySource`);
    * any other iterable, e.g. a generator of frames (:class:`IteratorSource`).

    Raises:
        InputError: for every problem with the input or the options, with a one-line message.
    """
    rng = _Range.make(stride, start, end)
    if isinstance(source, FrameSource):
        if not rng.is_default:
            raise InputError(
                f"{source.name} is already an open frame source; pass stride/start/end when opening it "
                "instead of to open_source() again"
            )
        return source
    kwargs: dict[str, Any] = {"stride": rng.stride, "start": rng.start, "end": rng.end}
    if isinstance(source, av.container.InputContainer):
        return ContainerSource(source, **kwargs)
    if isinstance(source, bool):
        raise InputError(f"source must be a path, URL, camera number, array or frames; got {source!r}")
    if isinstance(source, int | np.integer):
        return _open_camera(int(source), rng)
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if isinstance(text, bytes):
            raise InputError("pass paths as str or pathlib.Path, not bytes")
        return _open_text(text, rng)
    if isinstance(source, np.ndarray):
        return ArraySource(source, **kwargs)
    if isinstance(source, list | tuple):
        return ArraySource(source, **kwargs)
    if isinstance(source, Image.Image):
        raise InputError("a single PIL image is not a video; pass a list of images, e.g. [image]")
    if isinstance(source, bytes | bytearray | memoryview):
        raise InputError("raw bytes are not supported; write them to a file and pass its path")
    if isinstance(source, Iterable):
        return IteratorSource(source, **kwargs)
    raise InputError(
        f"unsupported source type {type(source).__name__}; pass a video path or URL, a folder of frames, a "
        "camera number, a (T, H, W, 3) uint8 array, a list of frames or an iterator of frames"
    )


def _open_text(text: str, rng: _Range) -> FrameSource:
    """Open a str source: URL, ``pipe:``, ``file:`` or a local path."""
    kwargs: dict[str, Any] = {"stride": rng.stride, "start": rng.start, "end": rng.end}
    match = _URL_RE.match(text)
    if match and match.group("scheme").lower() != "file" and not Path(text).exists():
        scheme = match.group("scheme").lower()
        if scheme not in LIVE_URL_SCHEMES:
            raise InputError(
                f"unsupported URL scheme {scheme!r} in {_redact_url(text)}; supported: "
                f"{', '.join(sorted(LIVE_URL_SCHEMES))} (or a local path)"
            )
        options = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else None
        return LiveStreamSource(text, options=options, timeout=network_timeout(), **kwargs)
    if _PIPE_RE.match(text):
        return LiveStreamSource(text, **kwargs)
    if text.isdigit() and not Path(text).exists():  # "0" on the command line is camera 0, as documented
        return _open_camera(int(text), rng)
    path = Path(text).expanduser()
    if text[:5].lower() == "file:" and not path.exists():
        path = _file_url_to_path(text)
    return _open_path(path, text, rng)
