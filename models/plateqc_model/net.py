"""Small CNN for plateqc: 2-channel S x S plates -> usable/unusable logits + 14 artifact logits.

Layers exported for Grad-CAM (module names; each is conv -> BN -> ReLU):
  early  : S/4  (64x64 at S=256)
  middle : S/8  (32x32)
  last   : S/16 (16x16)
Heads read global max + global average pooling of ``last`` so that a small
artifact (dust, a thin scratch) still moves the score.

Two heads (plan-1.3.md round 15):
  "pooled" (every model to 1.6.0): class and artifact logits are linear in the pooled ``last``
           features, so the verdict may use anything ``last`` holds.
  "maps"   : a 1x1 convolution ``type_map`` turns ``last`` into one map per artifact type
           (trained against the artifact masks); each artifact logit is an affine function of
           its own map's spatial max and mean, and the class logits are linear in those 2K
           pooled map values only, so the verdict can only come through artifact evidence.
Both have the same inputs, outputs and explained layers (the model contract does not change);
``build`` tells them apart by the tensors a weights file holds.

``extra_blocks`` (round 18) appends that many residual blocks to ``middle`` and to ``last``
at the same width; each starts as the identity, so a deepened network given a shallower
network's weights computes exactly what that network did until training moves the blocks.
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


class Residual(nn.Module):
    """x -> relu(x + BN(conv3x3(x))). The BatchNorm scale starts at zero, so the block starts as
    the identity on its (non-negative, post-ReLU) input; its convolution's initial weights come
    from their own random stream (`seed`) so that adding blocks leaves the draws of everything
    else (the other layers, batch order, dropout) as they were without them."""

    def __init__(self, ch: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        nn.init.zeros_(self.bn.weight)
        # a module, not torch.relu: verify.py's float64 reference finds every ReLU by its module
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu(x + self.bn(self.conv(x)))


class PlateNet(nn.Module):
    LAYERS = ["early", "middle", "last"]
    HEADS = ("pooled", "maps")

    def __init__(self, n_types: int = 14, width: int = 16, head: str = "pooled",
                 extra_blocks: int = 0):
        super().__init__()
        if head not in self.HEADS:
            raise ValueError(f"head {head!r} is not one of {self.HEADS}")
        self.head = head
        self.extra_blocks = extra_blocks
        w = width
        self.stem = conv_bn_relu(2, w, stride=2)                 # S/2
        self.early = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2),
                                   conv_bn_relu(2 * w, 2 * w))   # S/4
        self.middle = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2),
                                    conv_bn_relu(4 * w, 4 * w))  # S/8
        self.last = nn.Sequential(conv_bn_relu(4 * w, 6 * w, stride=2),
                                  conv_bn_relu(6 * w, 8 * w, dilation=2))  # S/16
        for i in range(extra_blocks):
            self.middle.append(Residual(4 * w, seed=1000 + i))
            self.last.append(Residual(8 * w, seed=2000 + i))
        feat = 2 * 8 * w
        self.dropout = nn.Dropout(0.2)
        if head == "pooled":
            self.cls_head = nn.Linear(feat, 2)
            self.type_head = nn.Linear(feat, n_types)
        else:
            self.type_map = nn.Conv2d(8 * w, n_types, 1)
            # per type: logit = scale[k, 0] * max + scale[k, 1] * mean + bias[k]; starts as the
            # map's maximum, the natural "is it anywhere" score
            self.type_scale = nn.Parameter(torch.tensor([[1.0, 0.0]] * n_types))
            self.type_bias = nn.Parameter(torch.zeros(n_types))
            self.cls_head = nn.Linear(2 * n_types, 2)

    def forward(self, x):
        x = self.stem(x)
        x = self.early(x)
        x = self.middle(x)
        a = self.last(x)
        if self.head == "maps":
            m = self.type_map(a)
            mx, mean = m.amax(dim=(2, 3)), m.mean(dim=(2, 3))
            types = mx * self.type_scale[:, 0] + mean * self.type_scale[:, 1] + self.type_bias
            return self.cls_head(torch.cat([mx, mean], dim=1)), types
        pooled = torch.cat([a.amax(dim=(2, 3)), a.mean(dim=(2, 3))], dim=1)
        pooled = self.dropout(pooled)
        return self.cls_head(pooled), self.type_head(pooled)

    def cam_weights(self, channels: int, h: int, w: int) -> torch.Tensor:
        """Grad-CAM's channel weights at ``last`` for the unusable logit in closed form: the
        spatial mean of d logit / d last (max ties aside). Pooled head: (w_max + w_mean) / hw;
        maps head: the same through the 1x1 maps, sum_k (u_k + v_k) W_k / hw."""
        u = self.cls_head.weight[1]
        if self.head == "maps":
            k = self.type_map.out_channels
            wk = (u[:k] + u[k:]) @ self.type_map.weight.view(k, channels)
            return wk / (h * w)
        return (u[:channels] + u[channels:]) / (h * w)


def head_of(state: dict) -> str:
    """Which head a state dict was saved from."""
    return "maps" if "type_map.weight" in state else "pooled"


def extra_blocks_of(state: dict) -> int:
    """How many residual blocks a state dict's `last` carries beyond the two convolutions."""
    return sum(1 for k in state if k.startswith("last.") and k.endswith(".conv.weight"))


def is_extra_block(key: str, extra_blocks: int) -> bool:
    """Whether a state-dict key belongs to one of `extra_blocks` residual blocks appended to
    `middle` and `last` (their indices 2 onwards, after the stage's two convolutions)."""
    stage, idx, *_ = key.split(".") + ["", ""]
    return stage in ("middle", "last") and idx.isdigit() and 2 <= int(idx) < 2 + extra_blocks


def build(state: dict, width: int, n_types: int = 14) -> PlateNet:
    """A network with the head and depth `state` was saved from, loaded with it, in eval mode."""
    m = PlateNet(n_types=n_types, width=width, head=head_of(state),
                 extra_blocks=extra_blocks_of(state))
    m.load_state_dict(state)
    return m.eval()
