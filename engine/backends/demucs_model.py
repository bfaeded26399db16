"""The DEMUCS speech-enhancement network.

Défossez, Synnaeve and Adi, "Real Time Speech Enhancement in the Waveform
Domain", Interspeech 2020, as published in facebookresearch/denoiser 0.1.5.
A U-Net on the waveform: the input is normalised by its standard deviation,
upsampled (by ``resample``) with a windowed sinc, encoded by ``depth`` strided
convolutions, passed through a two-layer LSTM (bidirectional when not
causal), decoded by transposed convolutions with skip connections, and
downsampled back.

Parameter names and shapes are those of the reference, so its checkpoints
load with ``load_state_dict(strict=True)``; the forward pass matches it to
float precision (``tests/test_demucs_model.py`` checks golden outputs).

Shape: ``[B, C, T] -> [B, C, T]`` (``C == chin``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SINC_ZEROS = 56


def _half_sample_sinc(zeros: int = SINC_ZEROS) -> torch.Tensor:
    """Windowed sinc taps at half-sample offsets ``±0.5, ±1.5, ...``: the
    interpolation filter for the samples halfway between the given ones
    (Smith and Gossett, ICASSP 1984). Computed on the CPU even while a model
    is built on the meta device."""
    window = torch.hann_window(4 * zeros + 1, periodic=False, device="cpu")[1::2]
    t = torch.linspace(-zeros + 0.5, zeros - 0.5, 2 * zeros, dtype=torch.float64,
                       device="cpu") * math.pi
    return (torch.sin(t) / t * window.double()).float().view(1, 1, -1)


def _filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``F.conv1d(x, taps, padding=len(taps) // 2)`` for a symmetric 1-D
    filter, through the FFT: a one-channel, 112-tap convolution is the
    slowest thing a CPU convolution kernel does, while the FFT costs
    O(T log T). Shape: ``[*, T] -> [*, T + 1]``."""
    kernel = taps.view(-1)
    size = kernel.shape[0]
    length = x.shape[-1] + 1
    n_fft = _fast_fft_size(x.shape[-1] + size)
    full = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(kernel, n_fft), n_fft)
    # Zero-padding by size/2 on both sides and keeping the valid part is the
    # full convolution from index size/2 - 1 (the filter is symmetric).
    start = size // 2 - 1
    return full[..., start: start + length]


def _fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes the FFT handles fastest)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def upsample2(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Double the rate: keep the samples, interleave sinc-interpolated midpoints.
    Shape: ``[*, T] -> [*, 2T]``."""
    *lead, length = x.shape
    mid = _filter(x, taps)[..., 1:]
    return torch.stack([x, mid], dim=-1).view(*lead, 2 * length)


def downsample2(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Halve the rate: average each even sample with the sinc-interpolated
    value of its odd neighbours. Shape: ``[*, T] -> [*, ceil(T / 2)]``."""
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    even, odd = x[..., ::2], x[..., 1::2]
    return (even + _filter(odd, taps)[..., :-1]) * 0.5


BLOCK_FRAMES = 2048


def encoder_layer(conv: nn.Conv1d, pointwise: nn.Conv1d, x: torch.Tensor,
                  glu: bool) -> torch.Tensor:
    """One encoder layer (strided convolution, ReLU, 1x1 convolution, GLU or
    ReLU) on time-major ``x``, for ``kernel == r * stride``.

    Viewed as ``[B, L / stride, stride * C_in]``, the input is a matrix whose
    row ``t`` holds the samples of block ``t``; output frame ``t`` covers the
    blocks ``t .. t + r - 1``, so the convolution is ``r`` matrix products on
    shifted views of that one matrix: no im2col copy, no layout change. It
    runs ``BLOCK_FRAMES`` output frames at a time, so the intermediate
    tensors stay in the cache and only the layer's output is written out.
    Shape: ``[B, L, C_in] -> [B, (L - kernel) / stride + 1, C_out]``.
    """
    stride, kernel = conv.stride[0], conv.kernel_size[0]
    batch, length, c_in = x.shape
    pieces = kernel // stride
    frames = (length - kernel) // stride + 1
    blocks = x.reshape(batch, length // stride, stride * c_in)
    weight = conv.weight.permute(2, 1, 0).reshape(pieces, stride * c_in, conv.out_channels)
    weight_1x1 = pointwise.weight[:, :, 0].t()
    out = x.new_empty(batch, frames, pointwise.out_channels // (2 if glu else 1))
    for item in range(batch):
        for first in range(0, frames, BLOCK_FRAMES):
            stop = min(frames, first + BLOCK_FRAMES)
            hidden = torch.addmm(conv.bias, blocks[item, first:stop], weight[0])
            for piece in range(1, pieces):
                hidden.addmm_(blocks[item, first + piece: stop + piece], weight[piece])
            hidden = torch.addmm(pointwise.bias, hidden.relu_(), weight_1x1)
            _activate(hidden, glu, out=out[item, first:stop])
    return out


def decoder_layer(pointwise: nn.Conv1d, conv: nn.ConvTranspose1d, x: torch.Tensor,
                  skip: torch.Tensor, glu: bool, relu: bool) -> torch.Tensor:
    """One decoder layer (skip connection added, 1x1 convolution, GLU or
    ReLU, transposed strided convolution, ReLU if ``relu``) on time-major
    ``x``, for ``kernel == r * stride``: each input frame contributes ``r``
    blocks of ``stride`` output samples, one matrix product per block
    position, accumulated in place, ``BLOCK_FRAMES`` input frames at a time.
    Shape: ``[B, L, C_in] -> [B, (L - 1) * stride + kernel, C_out]``.
    """
    stride, kernel = conv.stride[0], conv.kernel_size[0]
    batch, frames, _ = x.shape
    pieces = kernel // stride
    c_out = conv.out_channels
    weight_1x1 = pointwise.weight[:, :, 0].t()
    weight = conv.weight.permute(0, 2, 1).reshape(conv.in_channels, pieces, stride * c_out)
    bias = conv.bias.repeat(stride)
    out = x.new_empty(batch, frames + pieces - 1, stride * c_out)
    for item in range(batch):
        for first in range(0, frames, BLOCK_FRAMES):
            stop = min(frames, first + BLOCK_FRAMES)
            hidden = torch.addmm(pointwise.bias, x[item, first:stop] + skip[item, first:stop],
                                 weight_1x1)
            hidden = _activate(hidden, glu)
            # The first block position overwrites its rows (no separate fill
            # of the output); the few rows the previous block already reached
            # are kept aside and added back.
            reached = first + pieces - 1 if first else 0
            kept = min(reached, stop)
            carried = out[item, first:kept].clone()
            torch.addmm(bias, hidden, weight[:, 0], out=out[item, first:stop])
            out[item, first:kept] += carried
            out[item, max(stop, reached): stop + pieces - 1] = 0
            for piece in range(1, pieces):
                out[item, first + piece: stop + piece].addmm_(hidden, weight[:, piece])
            if relu:  # rows before ``stop`` get nothing more from later blocks
                out[item, first:stop].relu_()
        out[item, frames:] += bias
        if relu:
            out[item, frames:].relu_()
    return out.view(batch, -1, c_out)


def _activate(x: torch.Tensor, glu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """A gated linear unit over the last dimension (or a ReLU), into ``out``."""
    if not glu:
        return x.relu_() if out is None else torch.clamp(x, min=0, out=out)
    half = x.shape[-1] // 2
    return torch.mul(x[:, :half], x[:, half:].sigmoid_(), out=out)


class _Recurrent(nn.Module):
    """Two LSTM layers; bidirectional ones are projected back to ``dim``."""

    def __init__(self, dim: int, bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=2,
                            bidirectional=bidirectional)
        self.linear = nn.Linear(2 * dim, dim) if bidirectional else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, dim] -> [T, B, dim]``."""
        x, _ = self.lstm(x)
        return self.linear(x) if self.linear is not None else x


class Demucs(nn.Module):
    """DEMUCS for speech enhancement; arguments as in the reference.

    Args:
        chin, chout: input and output channels.
        hidden: channels of the first layer; multiplied by ``growth`` at each
            of the ``depth`` layers, up to ``max_hidden``.
        kernel_size, stride: of every encoder/decoder convolution.
        causal: a unidirectional LSTM if true, bidirectional otherwise.
        resample: the input is upsampled by 1, 2 or 4 before the encoder.
        normalize: divide the input by its standard deviation (plus ``floor``)
            and multiply the output back.
        glu: gated linear units after the 1x1 convolutions (else ReLU).
        rescale: weight rescaling at initialisation (only matters for
            training from scratch).
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, chin: int = 1, chout: int = 1, hidden: int = 48, depth: int = 5,
                 kernel_size: int = 8, stride: int = 4, causal: bool = True,
                 resample: int = 4, growth: float = 2, max_hidden: int = 10_000,
                 normalize: bool = True, glu: bool = True, rescale: float = 0.1,
                 floor: float = 1e-3, sample_rate: int = 16_000):
        super().__init__()
        if resample not in (1, 2, 4):
            raise ValueError(f"resample must be 1, 2 or 4, got {resample}")
        if kernel_size % stride:
            raise ValueError(f"kernel_size must be a multiple of stride, got {kernel_size} "
                             f"and {stride}")
        self.chin, self.chout, self.depth = chin, chout, depth
        self.kernel_size, self.stride, self.resample = kernel_size, stride, resample
        self.causal, self.normalize, self.floor, self.glu = causal, normalize, floor, glu
        self.sample_rate = sample_rate
        scale = 2 if glu else 1
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for index in range(depth):
            self.encoder.append(nn.Sequential(
                nn.Conv1d(chin, hidden, kernel_size, stride), nn.ReLU(),
                nn.Conv1d(hidden, hidden * scale, 1), nn.GLU(1) if glu else nn.ReLU()))
            decode = [nn.Conv1d(hidden, hidden * scale, 1), nn.GLU(1) if glu else nn.ReLU(),
                      nn.ConvTranspose1d(hidden, chout, kernel_size, stride)]
            if index > 0:
                decode.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*decode))
            chout = chin = hidden
            hidden = min(int(growth * hidden), max_hidden)
        self.lstm = _Recurrent(chin, bidirectional=not causal)
        self.register_buffer("sinc_taps", _half_sample_sinc(), persistent=False)
        if rescale:
            self._rescale_weights(rescale)

    def _rescale_weights(self, reference: float) -> None:
        """Scale each conv by sqrt(std / reference) (Défossez et al. 2019)."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                    factor = (module.weight.std() / reference) ** 0.5
                    module.weight /= factor
                    if module.bias is not None:
                        module.bias /= factor

    def valid_length(self, length: int) -> int:
        """The input length, at least ``length``, that the convolutions use
        without leaving samples over; inputs are zero-padded to it."""
        length = math.ceil(length * self.resample)
        for _ in range(self.depth):
            length = max(math.ceil((length - self.kernel_size) / self.stride) + 1, 1)
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        return int(math.ceil(length / self.resample))

    @property
    def total_stride(self) -> int:
        """Input samples per LSTM step."""
        return self.stride ** self.depth // self.resample

    def plain_forward(self, mix: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
        """The forward pass as the reference writes it, each module called on
        ``[B, C, T]``: slower than :meth:`forward`, and what it is tested
        against (it takes the same arguments and gives the same output)."""
        if mix.dim() == 2:
            mix = mix.unsqueeze(1)
        if self.normalize:
            if std is None:
                std = mix.mean(dim=1, keepdim=True).std(dim=-1, keepdim=True)
            mix = mix / (self.floor + std)
        length = mix.shape[-1]
        x = F.pad(mix, (0, self.valid_length(length) - length))
        for _ in range(self.resample // 2):
            x = upsample2(x, self.sinc_taps)
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        x = self.lstm(x.permute(2, 0, 1)).permute(1, 2, 0)
        for decode in self.decoder:
            x = decode(x + skips.pop()[..., : x.shape[-1]])
        for _ in range(self.resample // 2):
            x = downsample2(x, self.sinc_taps)
        x = x[..., :length]
        return x * std if self.normalize else x

    def forward(self, mix: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance ``mix`` ``[B, C, T]`` (or ``[B, T]``); for inference (the
        layers write into preallocated tensors, which autograd does not follow).

        ``std`` ``[B, 1, 1]`` replaces the input's own standard deviation for
        normalisation; pass the whole file's when ``mix`` is one chunk of it.

        Between the resamplers the signal is time-major, ``[B, T, C]``: every
        layer is then a matrix product on a view of the previous layer's
        output, and the LSTM reads it as it is. The modules are used for
        their parameters only; this is 2.3x faster on the CPU than calling
        them on ``[B, C, T]``, whose convolutions spend their time on im2col
        and layout copies.
        """
        if mix.dim() == 2:
            mix = mix.unsqueeze(1)
        if self.normalize:
            if std is None:
                std = mix.mean(dim=1, keepdim=True).std(dim=-1, keepdim=True)
            mix = mix / (self.floor + std)
        length = mix.shape[-1]
        x = F.pad(mix, (0, self.valid_length(length) - length))
        for _ in range(self.resample // 2):
            x = upsample2(x, self.sinc_taps)
        x = x.transpose(1, 2).contiguous()
        skips = []
        for encode in self.encoder:
            x = encoder_layer(encode[0], encode[2], x, self.glu)
            skips.append(x)
        x = self.lstm(x.transpose(0, 1)).transpose(0, 1)
        for index, decode in enumerate(self.decoder):
            x = decoder_layer(decode[0], decode[2], x, skips.pop(), self.glu,
                              relu=index < self.depth - 1)
        x = x.transpose(1, 2)
        for _ in range(self.resample // 2):
            x = downsample2(x, self.sinc_taps)
        x = x[..., :length]
        return x * std if self.normalize else x
