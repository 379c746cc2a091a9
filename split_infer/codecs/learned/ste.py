"""Compression-aware training: the real codec forward, an identity gradient backward.

BottleNet (Eshratifar et al. 2019, §2.2 and Fig. 4) trains through a non-differentiable
lossy compressor by running the compressor/decompressor pair as-is in the forward pass and
treating it as the identity in the backward pass::

    forward:  x ──codec.compress──▶ bytes ──codec.decompress──▶ x̂      (numpy, per sample)
    backward: ∂L/∂x := ∂L/∂x̂

:class:`CodecSTE` does exactly that with any codec of the registry, so the network is trained
against the very quantizer, JPEG or entropy coder that will run on the wire (and a frame's
bytes can be counted while training).

While training, the encoder's output distribution moves from step to step, so a codec
calibrated once would clip ever more of it (and the identity gradient would keep pushing
clipped values further out). ``adaptive=True`` therefore codes every batch with fresh
parameters: uncalibrated, i.e. with each frame's own min/max, exactly BottleNet's eq. (1),
when the codec can run that way (``quant`` + ``jpeg``/``png``/``raw``/``zstd``), and otherwise
(``rans`` needs a model) calibrated on the batch itself. Deployment uses a codec calibrated
on the final encoder (:meth:`CodecSTE.calibrate`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from split_infer.codecs._api import Codec, get_codec

__all__ = ["CodecSTE"]


class _CodecIdentityGrad(torch.autograd.Function):
    """The codec round trip forward; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, owner: CodecSTE) -> torch.Tensor:  # type: ignore[override]
        return owner.roundtrip(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class CodecSTE(nn.Module):
    """Runs ``codec.compress`` → ``codec.decompress`` per sample; identity gradient.

    ``codec`` is a :class:`~split_infer.codecs.Codec` or a spec string. ``enabled=False``
    makes the module the identity (naive insertion trains without it, BottleNet §3.3).
    ``bytes_seen``/``frames_seen`` count the payload + params bytes of every encoded sample.
    """

    def __init__(self, codec: Codec | str, enabled: bool = True, adaptive: bool = False) -> None:
        super().__init__()
        self.spec = codec if isinstance(codec, str) else codec.spec
        self.codec: Codec | None = codec if isinstance(codec, Codec) else None
        self.enabled = enabled
        self.adaptive = adaptive
        self.bytes_seen = 0
        self.frames_seen = 0

    def extra_repr(self) -> str:
        return f"{self.spec!r}, enabled={self.enabled}, adaptive={self.adaptive}"

    @property
    def needs_calibration(self) -> bool:
        codec = self.codec or get_codec(self.spec)
        return codec.needs_calibration

    def calibrate(self, features: torch.Tensor | np.ndarray) -> Codec:
        """Refit a fresh codec to ``features`` (N, C, H, W) and use it from now on."""
        arr = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
        self.codec = get_codec(self.spec).calibrate(np.asarray(arr, np.float32))
        return self.codec

    def reset_counters(self) -> None:
        self.bytes_seen = 0
        self.frames_seen = 0

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode every sample of ``x`` with the real codec (no gradient)."""
        if self.adaptive:
            codec = get_codec(self.spec)
            self.codec = codec.calibrate(x.detach().to("cpu", torch.float32).numpy()) \
                if codec.needs_calibration else codec
        elif self.codec is None:
            codec = get_codec(self.spec)
            if codec.needs_calibration:
                raise RuntimeError(f"CodecSTE({self.spec!r}) needs calibrate() first")
            self.codec = codec
        arr = x.detach().to("cpu", torch.float32).numpy()
        out = np.empty_like(arr)
        for i, sample in enumerate(arr):
            encoded = self.codec.compress(sample)
            self.bytes_seen += len(encoded.payload) + len(encoded.params)
            self.frames_seen += 1
            out[i] = self.codec.decompress(encoded.payload, encoded.params, encoded.shape)
        return torch.from_numpy(out).to(x.device, x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return _CodecIdentityGrad.apply(x, self)
