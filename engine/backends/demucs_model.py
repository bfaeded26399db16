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
    (Smith and Gossett, ICASSP 1984)."""
    window = torch.hann_window(4 * zeros + 1, periodic=False)[1::2]
    t = torch.linspace(-zeros + 0.5, zeros - 0.5, 2 * zeros, dtype=torch.float64) * math.pi
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


def strided_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` on time-major ``x``, for ``kernel == r * stride``.

    Viewed as ``[B, L / stride, stride * C_in]``, the input is a matrix whose
    row ``t`` holds the samples of block ``t``; output frame ``t`` covers the
    blocks ``t .. t + r - 1``, so the convolution is ``r`` matrix products on
    shifted views of that one matrix: no im2col copy, no layout change.
    Shape: ``[B, L, C_in] -> [B, (L - kernel) / stride + 1, C_out]``.
    """
    stride, kernel = conv.stride[0], conv.kernel_size[0]
    batch, length, c_in = x.shape
    pieces = kernel // stride
    frames = (length - kernel) // stride + 1
    blocks = x.reshape(batch, length // stride, stride * c_in)
    weight = conv.weight.permute(2, 1, 0).reshape(pieces, stride * c_in, conv.out_channels)
    out = x.new_empty(batch, frames, conv.out_channels)
    for item in range(batch):
        torch.addmm(conv.bias, blocks[item, :frames], weight[0], out=out[item])
        for piece in range(1, pieces):
            out[item].addmm_(blocks[item, piece: piece + frames], weight[piece])
    return out


def strided_conv_transpose(conv: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` on time-major ``x``, for ``kernel == r * stride``: each
    input frame contributes ``r`` blocks of ``stride`` output samples, one
    matrix product per block position, accumulated in place.
    Shape: ``[B, L, C_in] -> [B, (L - 1) * stride + kernel, C_out]``.
    """
    stride, kernel = conv.stride[0], conv.kernel_size[0]
    batch, frames, c_in = x.shape
    pieces = kernel // stride
    c_out = conv.out_channels
    weight = conv.weight.permute(0, 2, 1).reshape(c_in, pieces, stride * c_out)
    bias = conv.bias.repeat(stride)
    out = x.new_empty(batch, frames + pieces - 1, stride * c_out)
    for item in range(batch):
        torch.addmm(bias, x[item], weight[:, 0], out=out[item, :frames])
        out[item, frames:] = bias
        for piece in range(1, pieces):
            out[item, piece: piece + frames].addmm_(x[item], weight[:, piece])
    return out.view(batch, -1, c_out)


def pointwise(conv: nn.Conv1d, x: torch.Tensor, glu: bool) -> torch.Tensor:
    """A 1x1 convolution, then a gated linear unit (or a ReLU), on
    time-major ``x``. Shape: ``[B, L, C] -> [B, L, C_out / 2]`` (or ``C_out``)."""
    y = torch.matmul(x, conv.weight[:, :, 0].t()).add_(conv.bias)
    return F.glu(y, dim=-1) if glu else y.relu_()


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
            x = pointwise(encode[2], strided_conv(encode[0], x).relu_(), self.glu)
            skips.append(x)
        x = self.lstm(x.transpose(0, 1)).transpose(0, 1)
        for index, decode in enumerate(self.decoder):
            x = pointwise(decode[0], x + skips.pop()[:, : x.shape[1]], self.glu)
            x = strided_conv_transpose(decode[2], x)
            if index < self.depth - 1:
                x = x.relu_()
        x = x.transpose(1, 2)
        for _ in range(self.resample // 2):
            x = downsample2(x, self.sinc_taps)
        x = x[..., :length]
        return x * std if self.normalize else x
