"""Make the golden fixtures that pin `engine`'s DEMUCS to the reference.

Runs facebookresearch/denoiser 0.1.5 (its sdist unpacked outside this
repository; nothing of it is committed) beside `engine.backends.demucs_model`
on random weights, for the four published configurations, and writes to
`tests/fixtures/demucs_<name>.npz`:

- the configuration and the seed the reference model was initialised with,
- the reference state_dict's parameter names and shapes, and the SHA-256 of
  its tensors (the weights themselves, 19 to 61 M parameters, are too large
  to commit; `torch.manual_seed(seed)` rebuilds them, and the hash proves it),
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
import hashlib
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


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes and float32 bytes, in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


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
            config=json.dumps(kwargs), seed=seed, state_sha256=state_digest(state),
            names=np.array(list(state)),
            shapes=json.dumps([list(t.shape) for t in state.values()]),
            input=mix.numpy(), output=expected.numpy(), **streamed)
        print(f"{name}: {sum(t.numel() for t in state.values()) / 1e6:.1f} M parameters, "
              f"output peak {expected.abs().max():.3f}")


if __name__ == "__main__":
    main()
