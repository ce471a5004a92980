"""Small torch CNN building blocks the ONNX tests export (imports torch: import this
module only after ``pytest.importorskip("torch")``)."""

from __future__ import annotations

import torch

tnn = torch.nn


def randomize_bn(module: tnn.Module, seed: int = 0) -> tnn.Module:
    """Random BatchNorm2d affine parameters and running statistics (fresh ones are an
    identity, which would hide folding mistakes); returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, tnn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


class BasicBlock(tnn.Module):
    """A ResNet basic block (identity shortcut)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class InvertedResidual(tnn.Module):
    """A MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, + x."""

    def __init__(self, c: int, expand: int = 4) -> None:
        super().__init__()
        h = c * expand
        self.body = tnn.Sequential(
            tnn.Conv2d(c, h, 1, bias=False),
            tnn.BatchNorm2d(h),
            tnn.ReLU6(),
            tnn.Conv2d(h, h, 3, padding=1, groups=h, bias=False),
            tnn.BatchNorm2d(h),
            tnn.ReLU6(),
            tnn.Conv2d(h, c, 1, bias=False),
            tnn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
