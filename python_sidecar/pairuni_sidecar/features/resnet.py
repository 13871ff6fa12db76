"""ResNet-50 (He et al. 2016) written with torch.nn only, so it runs without torchvision.

Module names mirror torchvision's ``resnet50`` exactly (conv1, bn1, layer1..layer4 of Bottleneck
blocks with conv1/bn1/conv2/bn2/conv3/bn3 and downsample.0/.1, fc), so a torchvision weights file
(``resnet50-*.pth``) loads with ``strict=True``. ``forward`` returns the 2048-d global-average-pooled
features: the classification head is kept only so the state dict matches, and is never applied
(the paper removes it).
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # torchvision's v1.5 variant: the stride sits on the 3×3 convolution.
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    feature_dim = 2048

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        layers = []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            downsample = None
            if stride != 1 or in_ch != width * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(in_ch, width * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(width * 4)
                )
            mods = [Bottleneck(in_ch, width, stride, downsample)]
            in_ch = width * 4
            mods += [Bottleneck(in_ch, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)  # loaded for key compatibility, not used by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)
