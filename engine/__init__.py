"""denoise's Python API: everything but the command line.

    from denoise.engine import Batch, BatchOptions, enhance_array, plan_jobs

    plan = plan_jobs(["in/"], "out/", recursive=True)
    for result in Batch(plan.jobs, BatchOptions()).run():  # the default method, dfn3
        print(result.input, result.status)

    clean = enhance_array(noisy, 16000, method="spectral")

The names below are imported on first use, so that importing a light part
(``denoise.engine.choices``, ``denoise.engine.errors``) does not load torch.
"""

from __future__ import annotations

from importlib import import_module

# The name pip installs this project by, for its metadata and for install
# hints with extras: PyPI's "denoise" is another project.
DISTRIBUTION = "denoise-speech"

_WHERE = {
    "Batch": "batch", "BatchOptions": "batch", "FileResult": "results", "Progress": "results",
    "default_jobs": "schedule", "Job": "discovery", "Plan": "discovery", "plan_jobs": "discovery",
    "DenoiseError": "errors", "FileError": "errors", "UsageError": "errors",
    "Finishing": "finishing", "PRESETS": "choices", "enhance_array": "pipeline",
    "progress_bar": "progress", "FileReport": "report", "Measure": "report",
    "write_reports": "report", "run_self_test": "selftest",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'denoise.engine' has no attribute {name!r}")
    return getattr(import_module(f"denoise.engine.{_WHERE[name]}"), name)
