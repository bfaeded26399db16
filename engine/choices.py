"""The values the engine's settings take: methods, channel modes, publishing
presets, clipping policies, the pretrained models.

Light to import (no torch, no numpy), so that the command line can offer
them in ``--help`` and check them before the numeric stack is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from denoise.engine.backends import REGISTRY

METHODS = REGISTRY  # name -> where its backend is; the command line checks against it
CHANNEL_MODES = ("each", "mix", "linked")
CLIP_MODES = ("limit", "report", "error")
DEHUM_MODES = ("off", "auto", "50", "60")  # auto: 50 or 60 Hz, whichever is found
PRETRAINED_MODELS = ("dns48", "dns64", "master64", "valentini_nc")


@dataclass(frozen=True)
class Preset:
    """A publishing target: loudness for stereo and for mono files, the
    true-peak ceiling, and the repairs it asks for (``dehum``: a
    :data:`DEHUM_MODES` value; ``leveler``: voices evened)."""

    stereo_lufs: float
    mono_lufs: float
    true_peak_dbtp: float
    dehum: str = "off"
    leveler: bool = False


# Podcasts: -16 LUFS stereo / -19 mono, -1 dBTP (AES TD1004, Apple and
# Spotify's podcast guidance); broadcast: EBU R128, -23 LUFS, -1 dBTP.
# Podcasts are recorded in rooms with laptops and mixers on the mains (hum
# is looked for) and have hosts and guests at different distances from
# their microphones (voices are evened).
PRESETS = {
    "podcast": Preset(-16.0, -19.0, -1.0, dehum="auto", leveler=True),
    "broadcast": Preset(-23.0, -23.0, -1.0),
}
