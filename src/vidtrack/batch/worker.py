"""The per-worker side of a batch: :class:`VideoProcessor` tracks whole videos and writes their outputs.

Both executors use it unchanged. A local pool worker and a Ray actor each build one processor, which keeps
the model loaded across videos (loading weights costs more than tracking a short clip). Each call of
:meth:`VideoProcessor.process` handles one video end to end: checksum, skip check, tracking, atomic output,
done-marker, and it never raises for a video's own problems. It returns a plain result dict instead, so one
bad video never takes the worker down.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidtrack.batch import state
from vidtrack.batch.manifest import JobOptions, VideoJob
from vidtrack.errors import VidtrackError

ProgressFn = Callable[[int], None]
"""Called with the number of frames tracked since the previous call."""


class VideoProcessor:
    """Tracks videos one at a time with models kept loaded between videos.

    Args:
        out_dir: the batch output folder.
        device: ``auto``/``cpu``/``cuda``/``cuda:N`` (a local pool worker sees only its GPU, as ``cuda:0``).
        retries: extra attempts for a video whose failure may be transient (any error other than a
            :class:`VidtrackError`, e.g. CUDA out of memory). Bad input (corrupt video, wrong prompt) fails at
            once: it would fail the same way again.
        threads: torch CPU threads per worker (None: torch's default, or what OMP_NUM_THREADS says).
        max_models: models kept loaded at once; a batch mixing models is sorted by model, so 1 is enough.
    """

    def __init__(self, out_dir: str | Path, *, device: str = "auto", retries: int = 1, threads: int | None = None,
                 max_models: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.device = device
        self.retries = max(0, int(retries))
        self.threads = threads
        self.max_models = max(1, max_models)
        self._loaders: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.host = socket.gethostname()

    # --- models ------------------------------------------------------------------------------------------
    def loader_for(self, opts: JobOptions) -> Any:
        """The loaded tracker for these options, loading it (and dropping the least recently used) if needed."""
        key = opts.model_key()
        if key in self._loaders:
            self._loaders.move_to_end(key)
            return self._loaders[key]
        from vidtrack.api import TrackingConfig, create_tracking_loader

        while len(self._loaders) >= self.max_models:
            _, old = self._loaders.popitem(last=False)
            old.unload()
        extra = json.loads(opts.tracking) if opts.tracking else {}
        config = TrackingConfig(model_id=opts.model, device=self.device, dtype=opts.dtype,
                                checkpoint_path=opts.checkpoint, resize=opts.resize, backward=opts.backward,
                                threads=self.threads, **extra)
        loader = create_tracking_loader(opts.model, config).load()
        self._loaders[key] = loader
        return loader

    def close(self) -> None:
        while self._loaders:
            self._loaders.popitem()[1].unload()

    # --- one video ---------------------------------------------------------------------------------------
    def process(self, job: VideoJob, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Track one video and write its outputs; returns ``{"id", "status": done|skipped|failed, ...}``.

        A failure is also written to ``OUT/<id>.error.txt`` (one line); a success removes that file.
        """
        started = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            try:
                res = self._process_once(job, progress)
                res.update(attempts=attempts, wall_seconds=round(time.perf_counter() - started, 4))
                return res
            except VidtrackError as e:
                message = state.one_line(e)
            except Exception as e:  # anything else may be transient (GPU memory, I/O): retry
                message = state.one_line(e)
                if attempts <= self.retries:
                    self._after_failure()
                    continue
            break
        if attempts > 1:
            message = f"{message} (after {attempts} attempts)"
        try:
            state.record_error(self.out_dir, job.id, message)
        except Exception as e:  # the error file is a convenience; the summary still has the message
            message = f"{message}; and the error file could not be written: {state.one_line(e)}"
        return {"id": job.id, "source": job.source, "status": "failed", "error": message, "attempts": attempts,
                "frames": 0, "seconds": 0.0, "wall_seconds": round(time.perf_counter() - started, 4),
                "worker": self._where()}

    def _where(self) -> str:
        return f"{self.host}:{os.getpid()}"

    def _after_failure(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # best effort only
            pass

    def _process_once(self, job: VideoJob, progress: ProgressFn | None) -> dict[str, Any]:
        from vidtrack.api import check_prompts
        from vidtrack.export import check_formats, export_result
        from vidtrack.sources import open_source

        opts = job.options
        prompts = job.load_prompts()
        inputs = state.job_inputs(job, prompts)
        digest = state.checksum(inputs)
        marker = state.is_done(self.out_dir, job.id, digest)
        if marker is not None:
            state.clear_error(self.out_dir, job.id)
            return skipped_result(job, marker, self.out_dir)

        src = open_source(job.source, stride=opts.stride, start=opts.start, end=opts.end)
        try:
            height, width = src.probe_size()
            prompts = [p.validate(height, width, source=job.source) for p in check_prompts(prompts)]
            check_formats(",".join(opts.formats), src)
            loader = self.loader_for(opts)  # after the checks: bad input never costs a model load

            def on_frame(_f: object) -> None:
                if progress is not None:
                    progress(1)

            result = loader.track_video(src, prompts, progress=on_frame)
        finally:
            src.close()

        stage = state.new_stage(self.out_dir, job.id)
        try:
            paths = export_result(result, stage, list(opts.formats), source=job.source,
                                  info={"source": job.source, "video_id": job.id})
            marker = {
                "format": "vidtrack-batch-done",
                "version": 1,
                "id": job.id,
                "source": job.source,
                "checksum": digest,
                "inputs": inputs,
                "outputs": {k: str(Path(v).relative_to(stage)) for k, v in paths.items()},
                "frames": len(result.frames),
                "objects": len(result.object_ids),
                "seconds": round(result.total_processing_time, 4),
                "fps": round(result.fps, 3),
                "device": str(getattr(loader, "device", self.device)),
                "worker": self._where(),
                "finished_at": state.now_iso(),
            }
            try:
                from vidtrack import __version__

                marker["vidtrack_version"] = __version__
            except ImportError:  # pragma: no cover
                pass
            state.write_json(stage / state.MARKER, marker)
            final = state.commit_stage(stage, self.out_dir, job.id)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        state.clear_error(self.out_dir, job.id)
        return {"id": job.id, "source": job.source, "status": "done", "frames": marker["frames"],
                "objects": marker["objects"], "seconds": marker["seconds"], "fps": marker["fps"],
                "output": str(final), "worker": marker["worker"], "device": marker["device"]}


def skipped_result(job: VideoJob, marker: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The result row of a video whose outputs are already complete for these inputs."""
    return {"id": job.id, "source": job.source, "status": "skipped", "frames": int(marker.get("frames", 0)),
            "objects": int(marker.get("objects", 0)), "seconds": float(marker.get("seconds", 0.0)),
            "fps": float(marker.get("fps", 0.0)), "output": str(out_dir / job.id)}
