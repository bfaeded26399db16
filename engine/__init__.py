"""denoise's Python API: everything but the command line.

    from denoise.engine import BatchOptions, Batch, plan_jobs, enhance_array

    jobs, problems = plan_jobs(["in/"], "out/", recursive=True)
    for result in Batch(jobs, BatchOptions(method="spectral")).run():
        print(result.input, result.status)

    clean = enhance_array(noisy, 16000, method="spectral")
"""

from __future__ import annotations

import numpy as np

from denoise.engine import backends
from denoise.engine.batch import Batch, BatchOptions, FileResult, Progress, default_jobs
from denoise.engine.discovery import Job, plan_jobs
from denoise.engine.errors import DenoiseError, FileError, UsageError
from denoise.engine.finishing import PRESETS, Finishing
from denoise.engine.pipeline import Shaping, enhance_audio

__all__ = ["PRESETS", "Batch", "BatchOptions", "DenoiseError", "FileError", "FileResult",
           "Finishing", "Job", "Progress", "UsageError", "default_jobs", "enhance_array",
           "plan_jobs"]


def enhance_array(audio: np.ndarray, sample_rate: int, method: str = "spectral",
                  dry: float = 0.0, **options) -> np.ndarray:
    """Enhance a whole signal held in memory, in one piece.

    Shape: ``[T]`` or ``[channels, T]`` -> the same. For files, and for
    signals too long to hold, use :class:`Batch`, which works in chunks.
    """
    backend = backends.build(backends.BackendSpec(method, options))
    signal = np.asarray(audio, dtype=np.float32)
    enhanced = enhance_audio(backend, np.atleast_2d(signal), sample_rate, Shaping(dry=dry))
    return enhanced.reshape(signal.shape)
