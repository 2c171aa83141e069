"""Small CNN for plateqc: 2-channel S x S plates -> usable/unusable logits + 14 artifact logits.

Layers exported for Grad-CAM (module names; each is conv -> BN -> ReLU):
  early  : S/4  (64x64 at S=256)
  middle : S/8  (32x32)
  last   : S/16 (16x16)
Heads read global max + global average pooling of ``last`` so that a small
artifact (dust, a thin scratch) still moves the score.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=False),
    )


class PlateNet(nn.Module):
    LAYERS = ["early", "middle", "last"]

    def __init__(self, n_types: int = 14, width: int = 16):
        super().__init__()
        w = width
        self.stem = conv_bn_relu(2, w, stride=2)                 # S/2
        self.early = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2),
                                   conv_bn_relu(2 * w, 2 * w))   # S/4
        self.middle = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2),
                                    conv_bn_relu(4 * w, 4 * w))  # S/8
        self.last = nn.Sequential(conv_bn_relu(4 * w, 6 * w, stride=2),
                                  conv_bn_relu(6 * w, 8 * w, dilation=2))  # S/16
        feat = 2 * 8 * w
        self.dropout = nn.Dropout(0.2)
        self.cls_head = nn.Linear(feat, 2)
        self.type_head = nn.Linear(feat, n_types)

    def forward(self, x):
        x = self.stem(x)
        x = self.early(x)
        x = self.middle(x)
        a = self.last(x)
        pooled = torch.cat([a.amax(dim=(2, 3)), a.mean(dim=(2, 3))], dim=1)
        pooled = self.dropout(pooled)
        return self.cls_head(pooled), self.type_head(pooled)
