"""Tests of vidtrack.sources against real inputs: videos encoded here with PyAV, PNG/JPEG folders, a FIFO.

Every frame of a generated video has its own flat colour (see :func:`colour`), so order, stride and
start/end can be checked from pixel values: exactly for lossless codecs, approximately for lossy ones.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.sources import (
    ArraySource,
    ContainerSource,
    FolderSource,
    FrameSource,
    IteratorSource,
    LiveStreamSource,
    VideoFileSource,
    natural_sort_key,
    open_source,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N = 12
RATE = 25


def colour(i: int) -> np.ndarray:
    """A distinct RGB colour per frame index, well apart from its neighbours even after lossy coding."""
    return np.array([(i * 20) % 256, 255 - (i * 20) % 256, (i * 50 + 30) % 256], dtype=np.uint8)


def flat(i: int, height: int, width: int) -> np.ndarray:
    return np.broadcast_to(colour(i), (height, width, 3)).copy()


def write_video(
    path: Path,
    codec: str,
    *,
    width: int = 64,
    height: int = 48,
    n: int = N,
    pix_fmt: str | None = None,
    fmt: str | None = None,
) -> Path:
    """Encode ``n`` flat-colour frames with PyAV; ``n=0`` writes a header and no frames."""
    container = av.open(str(path), mode="w", format=fmt)
    stream = container.add_stream(codec, rate=RATE)
    assert isinstance(stream, av.video.stream.VideoStream)
    stream.width, stream.height = width, height
    if pix_fmt:
        stream.pix_fmt = pix_fmt
    if n == 0:
        container.start_encoding()
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(flat(i, height, width), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def assert_one_line_error(exc_info: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def check_frames(
    frames: list[tuple[int, np.ndarray]], indices: list[int], size: tuple[int, int], atol: int = 0
) -> None:
    """Indices as expected; every frame a C-contiguous (H, W, 3) uint8 array of that index's colour."""
    assert [i for i, _ in frames] == indices
    for idx, frame in frames:
        assert frame.shape == (*size, 3)
        assert frame.dtype == np.uint8
        assert frame.flags.c_contiguous
        diff = np.abs(frame.astype(int) - colour(idx).astype(int)).max()
        assert diff <= atol, f"frame {idx} differs by {diff}"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small video per container/codec, written once for the module (encoding is the slow part)."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "h264.mp4": write_video(d / "h264.mp4", "libx264", pix_fmt="yuv420p"),
        "mpeg4.mp4": write_video(d / "mpeg4.mp4", "mpeg4", pix_fmt="yuv420p"),
        "mpeg4_odd.mov": write_video(d / "mpeg4_odd.mov", "mpeg4", width=65, height=49, pix_fmt="yuv420p"),
        "vp9.webm": write_video(d / "vp9.webm", "libvpx-vp9", pix_fmt="yuv420p"),
        "ffv1_odd.mkv": write_video(d / "ffv1_odd.mkv", "ffv1", width=65, height=49, pix_fmt="bgr0"),
        "raw.avi": write_video(d / "raw.avi", "rawvideo", pix_fmt="bgr24"),
    }


# ------------------------------------------------------------------------------------------ video files


@pytest.mark.parametrize(
    ("key", "size", "atol"),
    [
        ("h264.mp4", (48, 64), 12),
        ("mpeg4.mp4", (48, 64), 12),
        ("mpeg4_odd.mov", (49, 65), 12),
        ("vp9.webm", (48, 64), 12),
        ("ffv1_odd.mkv", (49, 65), 0),
        ("raw.avi", (48, 64), 0),
    ],
)
def test_video_file_all_frames(videos: dict[str, Path], key: str, size: tuple[int, int], atol: int) -> None:
    src = open_source(videos[key])
    assert isinstance(src, VideoFileSource)
    assert src.name == str(videos[key])
    assert src.is_live is False
    assert src.fps == pytest.approx(RATE)
    assert src.probe_size() == size
    # Containers that store a frame count report it; matroska/webm do not, and it is not guessed.
    assert src.num_frames in (N, None)
    if key.endswith((".mp4", ".mov", ".avi")):
        assert src.num_frames == N
    check_frames(list(src), list(range(N)), size, atol)


def test_video_file_can_be_iterated_again_and_concurrently(videos: dict[str, Path]) -> None:
    with open_source(videos["raw.avi"]) as src:
        a, b = iter(src), iter(src)
        first_a, first_b = next(a), next(b)
        assert first_a[0] == first_b[0] == 0
        rest = list(a)
        assert [i for i, _ in rest] == list(range(1, N))
        again = list(src)
        check_frames(again, list(range(N)), (48, 64))


@pytest.mark.parametrize("key", ["mpeg4.mp4", "ffv1_odd.mkv"])
def test_video_file_stride_start_end(videos: dict[str, Path], key: str) -> None:
    src = open_source(videos[key], start=3, end=10, stride=3)
    assert src.fps == pytest.approx(RATE / 3)
    if src.num_frames is not None:
        assert src.num_frames == 3
    size = src.probe_size()
    check_frames(list(src), [3, 6, 9], size, atol=12)
    tail = open_source(videos[key], start=10)
    check_frames(list(tail), [10, 11], size, atol=12)


def test_video_file_start_past_end(videos: dict[str, Path]) -> None:
    # Known length: refused at open.
    with pytest.raises(InputError) as exc_info:
        open_source(videos["raw.avi"], start=N)
    assert_one_line_error(exc_info, "past the end", f"{N} frames")
    # Unknown length (matroska): refused once the pass finds out.
    src = open_source(videos["ffv1_odd.mkv"], start=50)
    assert src.num_frames is None
    with pytest.raises(InputError) as exc_info:
        list(src)
    assert_one_line_error(exc_info, "past the end", f"only {N} frames")


def test_video_file_abandoned_pass_and_close(videos: dict[str, Path]) -> None:
    src = open_source(videos["raw.avi"])
    it = iter(src)
    next(it)
    unstarted = iter(src)
    src.close()
    src.close()  # idempotent
    # Passes in progress end cleanly (their container is closed only after their decoder is dropped).
    assert list(it) == []
    assert list(unstarted) == []
    with pytest.raises(InputError) as exc_info:
        iter(src)
    assert_one_line_error(exc_info, "closed")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(InputError) as exc_info:
        open_source(path)
    assert_one_line_error(exc_info, "video not found", str(path), "check the path")
    assert isinstance(exc_info.value, ValueError)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as exc_info:
        open_source(path)
    assert_one_line_error(exc_info, "cannot decode video", str(path), "PyAV/FFmpeg")


def test_text_file_with_video_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.mkv"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError) as exc_info:
        open_source(path)
    assert_one_line_error(exc_info, str(path))


def test_zero_frame_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "empty.avi", "rawvideo", pix_fmt="bgr24", n=0)
    with pytest.raises(InputError) as exc_info:
        open_source(path)
    assert_one_line_error(exc_info, "no frames", str(path))


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    with pytest.raises(InputError) as exc_info:
        open_source(path)
    assert_one_line_error(exc_info, "no video stream", str(path))


def test_file_url_is_a_path(videos: dict[str, Path]) -> None:
    src = open_source(videos["raw.avi"].as_uri())
    assert isinstance(src, VideoFileSource)
    assert src.is_live is False
    assert src.num_frames == N


def test_caller_owned_container(videos: dict[str, Path]) -> None:
    container = av.open(str(videos["raw.avi"]))
    try:
        src = open_source(container, stride=4)
        assert isinstance(src, ContainerSource)
        assert src.is_live is False
        assert src.num_frames == 3
        assert src.probe_size() == (48, 64)
        check_frames(list(src), [0, 4, 8], (48, 64))
        with pytest.raises(InputError) as exc_info:
            list(src)
        assert_one_line_error(exc_info, "only once")
        src.close()
        assert container.streams.video  # still open: the caller owns it
    finally:
        container.close()


def test_caller_container_already_decoding(videos: dict[str, Path]) -> None:
    """A container the caller has started decoding is read on from where it is, its settings untouched."""
    container = av.open(str(videos["raw.avi"]))
    try:
        next(container.decode(video=0))
        frames = list(open_source(container))
        assert len(frames) == N - 1
        check_frames(frames[:1], [0], (48, 64), atol=255)
        assert np.array_equal(frames[0][1][0, 0], colour(1))
    finally:
        container.close()


# ---------------------------------------------------------------------------------------- frame folders


def test_natural_sort_key() -> None:
    names = [
        "frame10.png",
        "Frame2.png",
        "frame1.png",
        "a.png",
        "frame02.png",
        "b10c2.jpg",
        "b10c10.jpg",
        "b9.jpg",
    ]
    assert sorted(names, key=natural_sort_key) == [
        "a.png",
        "b9.jpg",
        "b10c2.jpg",
        "b10c10.jpg",
        "frame1.png",
        "Frame2.png",
        "frame02.png",
        "frame10.png",
    ]


def write_folder(folder: Path, names: list[str], size: tuple[int, int] = (48, 64)) -> None:
    """Frame ``k`` of ``names`` gets colour(k), so natural order can be checked from pixels."""
    folder.mkdir(exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(flat(k, *size)).save(folder / name)


def test_folder_natural_order_and_filtering(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    write_folder(folder, ["1.png", "2.PNG", "10.png"])
    (folder / "notes.txt").write_text("not a frame")
    (folder / "._1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / "sub.png").mkdir()
    src = open_source(folder)
    assert isinstance(src, FolderSource)
    assert [f.name for f in src.files] == ["1.png", "2.PNG", "10.png"]
    assert src.num_frames == 3
    assert src.fps is None
    assert src.is_live is False
    assert src.probe_size() == (48, 64)
    check_frames(list(src), [0, 1, 2], (48, 64))
    check_frames(list(src), [0, 1, 2], (48, 64))  # re-iterable


def test_folder_stride_start_end(tmp_path: Path) -> None:
    names = [f"f{i}.png" for i in range(N)]
    write_folder(tmp_path, names)
    src = open_source(tmp_path, start=1, end=9, stride=4)
    assert src.num_frames == 2
    check_frames(list(src), [1, 5], (48, 64))
    with pytest.raises(InputError) as exc_info:
        open_source(tmp_path, start=N)
    assert_one_line_error(exc_info, "past the end")


def test_folder_jpeg_and_modes(tmp_path: Path) -> None:
    """JPEG frames, and PNGs in palette, grayscale and RGBA modes all come out as RGB."""
    rgb = flat(3, 16, 24)
    Image.fromarray(rgb).save(tmp_path / "0.jpg", quality=95)
    Image.fromarray(rgb).quantize(colors=2).save(tmp_path / "1.png")
    Image.fromarray(np.full((16, 24), 77, np.uint8), mode="L").save(tmp_path / "2.png")
    Image.fromarray(np.dstack([rgb, np.full((16, 24), 128, np.uint8)]), mode="RGBA").save(tmp_path / "3.png")
    Image.fromarray(np.full((16, 24), 40000, np.uint16)).save(tmp_path / "4.png")  # 16-bit grayscale
    frames = dict(open_source(tmp_path))
    assert sorted(frames) == [0, 1, 2, 3, 4]
    for frame in frames.values():
        assert frame.shape == (16, 24, 3)
        assert frame.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - rgb).max() <= 8
    assert (frames[1] == rgb).all()  # a flat colour survives a 2-colour palette exactly
    assert (frames[2] == 77).all()
    assert (frames[3] == rgb).all()
    assert (frames[4] == 40000 >> 8).all()


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc_info:
        open_source(tmp_path)
    assert_one_line_error(exc_info, f"folder {tmp_path} has no .jpg/.jpeg/.png frames")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputError):
        open_source(tmp_path)


def test_folder_size_mismatch_named_when_reached(tmp_path: Path) -> None:
    write_folder(tmp_path, ["1.png", "2.png"])
    Image.fromarray(flat(2, 40, 64)).save(tmp_path / "3.png")
    src = open_source(tmp_path)
    it = iter(src)
    assert next(it)[0] == 0
    assert next(it)[0] == 1
    with pytest.raises(InputError) as exc_info:
        next(it)
    assert_one_line_error(exc_info, "3.png", "64x40", "same size")


def test_folder_corrupt_image(tmp_path: Path) -> None:
    write_folder(tmp_path, ["1.png"])
    (tmp_path / "2.png").write_bytes(b"not a png at all")
    src = open_source(tmp_path)
    with pytest.raises(InputError) as exc_info:
        list(src)
    assert_one_line_error(exc_info, "2.png")


# ---------------------------------------------------------------------------------------- arrays, lists


def test_array_source() -> None:
    video = np.stack([flat(i, 8, 10) for i in range(N)])
    src = open_source(video)
    assert isinstance(src, ArraySource)
    assert (src.name, src.num_frames, src.fps, src.is_live) == ("array", N, None, False)
    assert src.probe_size() == (8, 10)
    frames = list(src)
    check_frames(frames, list(range(N)), (8, 10))
    frames[0][1][:] = 0  # consumers own their frames: the caller's array is untouched
    assert (video[0] == colour(0)).all()
    check_frames(list(open_source(video, start=2, end=11, stride=3)), [2, 5, 8], (8, 10))
    assert open_source(video, start=2, end=11, stride=3).num_frames == 3


def test_array_source_non_contiguous_and_grayscale() -> None:
    video = np.stack([flat(i, 8, 10) for i in range(4)])[:, :, ::-1]  # a strided view
    check_frames(list(open_source(video)), [0, 1, 2, 3], (8, 10))
    gray = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    frames = list(open_source(gray))
    assert [f.shape for _, f in frames] == [(4, 5, 3)] * 3
    assert (frames[2][1] == gray[2][:, :, None]).all()


@pytest.mark.parametrize(
    ("bad", "needles"),
    [
        (np.zeros((2, 8, 10, 3), np.float32), ("float32", "uint8", "* 255")),
        (np.zeros((2, 8, 10, 3), np.int64), ("int64", "uint8")),
        (np.zeros((8, 10, 3), np.uint8), ("single frame", "frame[None]")),
        (np.zeros((0, 8, 10, 3), np.uint8), ("no frames",)),
        (np.zeros((2, 3, 8, 10), np.uint8), ("channel-first",)),
        (np.zeros((2, 8, 10, 5), np.uint8), ("shape",)),
        ([], ("no frames in list",)),
        ([np.zeros((8, 10, 3), np.float64)], ("float64", "uint8")),
        ([np.zeros((8, 10, 3), np.uint8), np.zeros((8, 12, 3), np.uint8)], ("frame 1", "same size")),
        (["a.png"], ("frame 0", "str")),
        (Image.new("RGB", (4, 4)), ("single PIL image", "[image]")),
        (3.5, ("unsupported source type float",)),
        (b"\x00\x01", ("raw bytes",)),
        (True, ("got True",)),
    ],
)
def test_bad_in_memory_sources(bad: object, needles: tuple[str, ...]) -> None:
    with pytest.raises(InputError) as exc_info:
        open_source(bad)
    assert_one_line_error(exc_info, *needles)


def test_list_of_mixed_frames() -> None:
    """Arrays (RGB, grayscale, single-channel, RGBA) and PIL images in any mode, in one list or tuple."""
    h, w = 6, 7
    rgb = flat(5, h, w)
    items: list[object] = [
        rgb,
        np.full((h, w), 9, np.uint8),
        np.full((h, w, 1), 10, np.uint8),
        np.dstack([rgb, np.zeros((h, w), np.uint8)]),
        Image.fromarray(rgb),
        Image.fromarray(rgb).convert("L"),
        Image.fromarray(rgb).convert("RGBA"),
        Image.fromarray(rgb).convert("P"),
    ]
    for seq in (items, tuple(items)):
        src = open_source(seq)
        assert (src.name, src.num_frames, src.probe_size()) == ("list", len(items), (h, w))
        frames = dict(src)
        for frame in frames.values():
            assert frame.shape == (h, w, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
        assert (frames[0] == rgb).all() and frames[0] is not rgb
        assert (frames[1] == 9).all() and (frames[2] == 10).all()
        assert (frames[3] == rgb).all() and (frames[4] == rgb).all() and (frames[6] == rgb).all()
        assert (frames[5] == frames[5][:, :, :1]).all()
    assert [i for i, _ in open_source(items, start=1, stride=3)] == [1, 4, 7]


# ------------------------------------------------------------------------------------------- iterators


def gen(n: int, h: int = 8, w: int = 10) -> Iterator[np.ndarray]:
    for i in range(n):
        yield flat(i, h, w)


def test_generator_single_pass() -> None:
    src = open_source(gen(N))
    assert isinstance(src, IteratorSource)
    assert (src.name, src.num_frames, src.fps, src.is_live) == ("iterator", None, None, False)
    check_frames(list(src), list(range(N)), (8, 10))
    with pytest.raises(InputError) as exc_info:
        iter(src)
    assert_one_line_error(exc_info, "only once", "iterator")


def test_generator_probe_keeps_first_frame() -> None:
    src = open_source(gen(5), start=0, stride=2)
    assert src.probe_size() == (8, 10)
    assert src.probe_size() == (8, 10)
    check_frames(list(src), [0, 2, 4], (8, 10))


def test_generator_range_stops_pulling_at_end() -> None:
    pulled: list[int] = []

    def counting() -> Iterator[Image.Image]:
        for i in range(100):
            pulled.append(i)
            yield Image.fromarray(flat(i, 4, 4))

    check_frames(list(open_source(counting(), start=2, end=7, stride=2)), [2, 4, 6], (4, 4))
    assert max(pulled) == 7  # read up to `end`, not the whole generator


def test_generator_errors() -> None:
    with pytest.raises(InputError) as exc_info:
        open_source(gen(0)).probe_size()
    assert_one_line_error(exc_info, "no frames in iterator")
    with pytest.raises(InputError) as exc_info:
        list(open_source(gen(0)))
    assert_one_line_error(exc_info, "no frames in iterator")
    with pytest.raises(InputError) as exc_info:
        list(open_source(gen(3), start=5))
    assert_one_line_error(exc_info, "past the end", "only 3 frames")

    def mixed() -> Iterator[np.ndarray]:
        yield flat(0, 8, 10)
        yield flat(1, 9, 10)

    it = iter(open_source(mixed()))
    next(it)
    with pytest.raises(InputError) as exc_info:
        next(it)
    assert_one_line_error(exc_info, "iterator frame 1", "same size")
    with pytest.raises(InputError) as exc_info:
        list(open_source(iter([np.zeros((4, 4, 3), np.float32)])))
    assert_one_line_error(exc_info, "float32", "uint8")


def test_iterator_close_closes_generator() -> None:
    closed: list[bool] = []

    def g() -> Iterator[np.ndarray]:
        try:
            yield from gen(5)
        finally:
            closed.append(True)

    with open_source(g()) as src:
        next(iter(src))
    assert closed == [True]


# ----------------------------------------------------------------------------------- options, dispatch


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"stride": 0}, "stride must be >= 1"),
        ({"stride": 1.5}, "stride must be an integer"),
        ({"start": -1}, "start must be >= 0"),
        ({"start": 5, "end": 5}, "end must be greater than start"),
        ({"end": 0}, "end must be greater than start"),
        ({"stride": True}, "stride must be an integer"),
    ],
)
def test_invalid_range_options(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError) as exc_info:
        open_source(np.zeros((3, 4, 4, 3), np.uint8), **kwargs)  # type: ignore[arg-type]
    assert_one_line_error(exc_info, needle)


def test_numpy_integer_options() -> None:
    video = np.zeros((6, 4, 4, 3), np.uint8)
    src = open_source(video, stride=np.int64(2), start=np.int32(1))  # type: ignore[arg-type]
    assert [i for i, _ in src] == [1, 3, 5]


def test_frame_source_passthrough() -> None:
    src = open_source(np.zeros((3, 4, 4, 3), np.uint8))
    assert open_source(src) is src
    with pytest.raises(InputError) as exc_info:
        open_source(src, stride=2)
    assert_one_line_error(exc_info, "already an open frame source")
    assert isinstance(src, FrameSource)
    assert "ArraySource" in repr(src)


def test_missing_camera() -> None:
    if Path("/dev/video97").exists():
        pytest.skip("/dev/video97 exists on this machine")
    for source in (97, "/dev/video97"):
        with pytest.raises(InputError) as exc_info:
            open_source(source)
        assert_one_line_error(exc_info, "no camera", "/dev/video97", "does not exist")


def test_unreachable_rtsp_url_redacts_password() -> None:
    with pytest.raises(InputError) as exc_info:
        open_source("rtsp://admin:s3cret@127.0.0.1:1/stream")
    assert_one_line_error(exc_info, "cannot open live stream", "rtsp://admin:***@127.0.0.1:1/stream")
    assert "s3cret" not in str(exc_info.value)


def test_unknown_url_scheme() -> None:
    with pytest.raises(InputError) as exc_info:
        open_source("rstp://camera/stream")
    assert_one_line_error(exc_info, "unsupported URL scheme 'rstp'", "rtsp")


# ------------------------------------------------------------------------------------------ live (FIFO)


def _fifo_writer_main(fifo: str, n: int) -> None:
    """Body of the writer process: the whole stream, or until the reader goes away."""
    with contextlib.suppress(BrokenPipeError):  # the reader stopped early (end=..., close): allowed
        write_video(Path(fifo), "mpeg4", n=n, pix_fmt="yuv420p", fmt="mpegts")


class FifoWriter:
    """Another process writing an MPEG-TS stream of flat-colour frames into a FIFO, like a camera feeding a pipe.

    A process, not a thread: PyAV keeps the GIL while FFmpeg blocks on the FIFO (opening it, or writing to a
    full pipe), so a writer thread could freeze the reading thread that would unblock it (seen: 1 run in 12).
    """

    def __init__(self, fifo: Path, n: int) -> None:
        os.mkfifo(fifo)
        self.fifo = fifo
        self.errors: list[str] = []
        self.process = multiprocessing.get_context("spawn").Process(
            target=_fifo_writer_main, args=(str(fifo), n), daemon=True
        )
        self.process.start()

    def stop(self) -> None:
        """Unblock a writer still waiting for (or writing to) a reader, then join it.

        The FIFO is opened for reading without blocking: a blocking open waits for a writer, and the writer
        may close its end between an ``is_alive()`` check and that open.
        """
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + 30
            while self.process.is_alive() and time.monotonic() < deadline:
                try:
                    if not os.read(fd, 1 << 16):
                        time.sleep(0.01)  # no writer at the moment (not yet opened, or gone)
                except BlockingIOError:
                    time.sleep(0.01)  # a writer, but nothing to read yet
        finally:
            os.close(fd)
        self.process.join(timeout=10)
        assert not self.process.is_alive()
        if self.process.exitcode != 0:
            self.errors.append(f"writer process exited with status {self.process.exitcode}")


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is not available on this platform")


@needs_fifo
def test_fifo_is_a_live_stream(tmp_path: Path) -> None:
    """A FIFO fed with MPEG-TS by another thread is read as a live stream: no length, one pass, in order."""
    n = 15
    writer = FifoWriter(tmp_path / "live.ts", n)
    try:
        src = open_source(writer.fifo)
        assert isinstance(src, LiveStreamSource)
        assert src.is_live is True
        assert src.num_frames is None
        assert src.name == str(writer.fifo)
        assert src.probe_size() == (48, 64)
        assert src.fps == pytest.approx(RATE)
        frames = list(src)
        check_frames(frames, list(range(n)), (48, 64), atol=16)
        with pytest.raises(InputError) as exc_info:
            iter(src)
        assert_one_line_error(exc_info, "only once", "live stream")
    finally:
        writer.stop()
    assert not writer.errors, writer.errors


@needs_fifo
def test_fifo_with_range(tmp_path: Path) -> None:
    writer = FifoWriter(tmp_path / "live.ts", 10)
    try:
        with open_source(str(writer.fifo), start=1, end=8, stride=3) as src:
            assert src.fps == pytest.approx(RATE / 3)
            check_frames(list(src), [1, 4, 7], (48, 64), atol=16)
    finally:
        writer.stop()
    assert not writer.errors, writer.errors


@needs_fifo
def test_fifo_closed_mid_stream(tmp_path: Path) -> None:
    """Closing a live source while a pass is suspended ends the pass instead of crashing the decoder."""
    writer = FifoWriter(tmp_path / "live.ts", 30)
    try:
        src = open_source(writer.fifo)
        it = iter(src)
        assert [next(it)[0] for _ in range(3)] == [0, 1, 2]
        src.close()
        assert list(it) == []
        with pytest.raises(InputError) as exc_info:
            iter(src)
        assert_one_line_error(exc_info, "closed")
    finally:
        writer.stop()
    assert not writer.errors, writer.errors


# ----------------------------------------------------------------------------------------- shared data


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (expected the repo's sibling shared/data)")
    return path


def test_shared_bedroom_mp4() -> None:
    path = shared("videos/bedroom.mp4")
    src = open_source(path, stride=50)
    assert src.probe_size() == (540, 960)
    assert src.num_frames == 4
    frames = list(src)
    assert [i for i, _ in frames] == [0, 50, 100, 150]
    assert all(f.shape == (540, 960, 3) and f.flags.c_contiguous for _, f in frames)


def test_shared_davis_folder() -> None:
    path = shared("davis2016/JPEGImages/480p/car-shadow")
    src = open_source(path, stride=10)
    assert isinstance(src, FolderSource)
    assert src.num_frames == 4
    assert src.probe_size() == (480, 854)
    assert [f.name for f in src.files][:3] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    frames = list(src)
    assert [i for i, _ in frames] == [0, 10, 20, 30]
    assert all(f.shape == (480, 854, 3) for _, f in frames)
