"""Progress for Python users of the engine: a tqdm bar, which becomes a
widget in a Jupyter notebook (``tqdm.auto``).

    with progress_bar() as show:
        for result in batch.run(on_progress=show):
            ...

The command line draws its own bar (rich); the engine only reports
:class:`~denoise.engine.batch.Progress` through a callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(**tqdm_options) -> Iterator[Callable]:
    """A callback for ``Batch.run(on_progress=...)`` that shows seconds of
    audio done out of the total, and files done; closed on leaving."""
    from tqdm.auto import tqdm

    bars = []  # made at the first report, when the total is known

    def show(progress) -> None:
        if not bars:
            bars.append(tqdm(desc="enhancing", total=progress.audio_s_total, unit="s",
                             bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio "
                                        "[{elapsed}<{remaining}{postfix}]", **tqdm_options))
        bar = bars[0]
        bar.n = progress.audio_s_done
        bar.set_postfix_str(f"{progress.files_done}/{progress.files_total} files", refresh=False)
        bar.refresh()

    try:
        yield show
    finally:
        for bar in bars:
            bar.close()
