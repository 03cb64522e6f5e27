"""A small U-Net: RGB in 0..1 -> one building logit per pixel.

The input is average-pooled by ``downsample`` first (drone imagery at ~0.3 m carries more detail
than footprints need) and the logits are upsampled back, so the answer has the input's size.
Height and width are padded (reflect) to a multiple of :attr:`UNet.stride` and cropped back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNet(nn.Module):
    """Two down- and two up-sampling levels, ``width`` channels at the top."""

    def __init__(self, width: int = 16, downsample: int = 2) -> None:
        super().__init__()
        self.width, self.downsample = width, downsample
        self.enc0, self.enc1 = _block(3, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up1 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec1 = _block(4 * width, 2 * width)
        self.up0 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec0 = _block(2 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    @property
    def stride(self) -> int:
        """Sizes are padded to a multiple of this."""
        return 4 * self.downsample

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "downsample": self.downsample}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool2d(e0, 2))
        b = self.bottom(F.max_pool2d(e1, 2))
        d1 = self.dec1(torch.cat([self.up1(b), e1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], dim=1))
        logits = self.head(d0)
        if self.downsample > 1:
            logits = F.interpolate(logits, scale_factor=self.downsample, mode="bilinear", align_corners=False)
        return logits[..., :height, :width]


def receptive_field_radius(net: UNet, size: int = 256) -> int:
    """How many input pixels from an output pixel can change it (measured by its gradient)."""
    net = net.eval()
    x = torch.rand(1, 3, size, size, requires_grad=True)
    centre = size // 2
    net(x)[0, 0, centre, centre].backward()
    assert x.grad is not None
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1)), as_tuple=True)
    return int(max((rows - centre).abs().max(), (cols - centre).abs().max()))
