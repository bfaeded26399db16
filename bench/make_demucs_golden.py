"""Make the golden fixtures that pin `engine`'s DEMUCS to the reference.

Runs facebookresearch/denoiser 0.1.5 (its sdist unpacked outside this
repository; nothing of it is committed) beside `engine.backends.demucs_model`
on random weights, for the four published configurations, and writes to
`tests/fixtures/demucs_<name>.npz`:

- the configuration and the seed the reference model was initialised with,
- the reference state_dict's parameter names and shapes, and a fingerprint
  of each tensor (the weights themselves, 19 to 61 M parameters, are too
  large to commit; `torch.manual_seed(seed)` rebuilds them, and the
  fingerprint proves it: three float64 moments rather than a hash of the
  bytes, because the initialisation's rescaling (a standard deviation) rounds
  differently, by an ulp, on different CPUs' kernels),
- an input of 1.5 s at 16 kHz (an odd length, to exercise the valid-length
  padding) and the reference's output for it;
- for the causal configurations, the output of the reference's streamer
  (``DemucsStreamer``, fed in blocks of 100 samples and flushed), which
  normalises and resamples online and so differs from the offline output:
  one frame per step (a 16 ms hop, ``stream_output``) and two (32 ms,
  ``stream_output_2``).

    pip download --no-deps --no-binary :all: denoiser==0.1.5 -d /tmp/ref
    tar xzf /tmp/ref/denoiser-0.1.5.tar.gz -C /tmp/ref
    python bench/make_demucs_golden.py --reference /tmp/ref/denoiser-0.1.5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
CONFIGS = {
    "dns48": (dict(hidden=48), 48),
    "dns64": (dict(hidden=64), 64),
    "master64": (dict(hidden=64), 6464),
    "valentini_nc": (dict(hidden=64, causal=False, stride=2, resample=2), 2),
}


def state_fingerprint(state: dict[str, torch.Tensor]) -> np.ndarray:
    """``[tensors, 4]`` float64: each tensor's sum, its sum weighted by
    position (which a permutation or transposition changes), its sum of
    magnitudes and its sum of squares."""
    rows = []
    for tensor in state.values():
        values = tensor.detach().to(torch.float64).flatten()
        position = torch.linspace(0.0, 1.0, values.numel(), dtype=torch.float64)
        rows.append([values.sum(), (values * position).sum(), values.abs().sum(),
                     values.square().sum()])
    return np.array(rows, dtype=np.float64)


def fingerprints_match(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-6) -> bool:
    """Equal within ``rtol`` of each tensor's scale: the sums against the sum
    of magnitudes (a sum near zero has no relative precision of its own), the
    sum of squares against itself."""
    if got.shape != expected.shape:
        return False
    magnitude = expected[:, 2:3]
    scale = np.concatenate([magnitude, magnitude, magnitude, expected[:, 3:4]], axis=1)
    return bool(np.all(np.abs(got - expected) <= rtol * scale))


def golden_input(seed: int, length: int = 23_999) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16_000
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (torch.sin(2 * torch.pi * 3 * t) > 0)
    return (tone + 0.05 * torch.randn(length, generator=generator)).view(1, 1, -1)


def streamer_output(streamer, mix: torch.Tensor, block: int = 100) -> np.ndarray:
    """What the reference streamer gives for ``mix`` ``[C, T]`` fed in blocks."""
    pieces = [streamer.feed(mix[:, start:start + block])
              for start in range(0, mix.shape[-1], block)]
    pieces.append(streamer.flush())
    return torch.cat(pieces, dim=-1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="unpacked denoiser-0.1.5 sdist (the folder holding denoiser/)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.reference))
    from denoiser.demucs import Demucs as ReferenceDemucs
    from denoiser.demucs import DemucsStreamer

    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, seed) in CONFIGS.items():
        torch.manual_seed(seed)
        reference = ReferenceDemucs(**kwargs, sample_rate=16_000).eval()
        state = reference.state_dict()
        mix = golden_input(seed)
        with torch.no_grad():
            expected = reference(mix)
            streamed = {f"stream_output{suffix}": streamer_output(
                            DemucsStreamer(reference, num_frames=frames), mix[0])
                        if reference.causal else np.zeros(0)
                        for frames, suffix in ((1, ""), (2, "_2"))}
        np.savez_compressed(
            FIXTURES / f"demucs_{name}.npz",
            config=json.dumps(kwargs), seed=seed, state_fingerprint=state_fingerprint(state),
            names=np.array(list(state)),
            shapes=json.dumps([list(t.shape) for t in state.values()]),
            input=mix.numpy(), output=expected.numpy(), **streamed)
        print(f"{name}: {sum(t.numel() for t in state.values()) / 1e6:.1f} M parameters, "
              f"output peak {expected.abs().max():.3f}")


if __name__ == "__main__":
    main()
