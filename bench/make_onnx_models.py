#!/usr/bin/python3
"""bench/make_onnx_models.py: the two image models of `dpsgd bench --model` (issue 18: "memory and
time of every mode against no-DP" for a WRN-16-4 with GroupNorm and a small ViT), exported from
PyTorch. Run by hand, not in CI, with Debian's python3-torch (1.13) and python3-onnx:

    /usr/bin/python3 bench/make_onnx_models.py OUT_DIR
    ./build/dpsgd bench --model OUT_DIR/wrn16_4.onnx
    ./build/dpsgd bench --model OUT_DIR/vit_small.onnx

It writes into OUT_DIR (created if missing; the files are not part of the repository):

  wrn16_4.onnx    Wide ResNet 16-4 for 3x32x32 images, 10 classes, with nn.GroupNorm(16 groups)
                  in place of BatchNorm, as in De et al. 2022 ("Unlocking high-accuracy
                  differentially private image classification through scale"): a 3x3 stem
                  conv to 16 channels, three groups of two pre-activation blocks
                  (GN-ReLU-conv3x3-GN-ReLU-conv3x3, a 1x1 conv shortcut where the shape
                  changes) of widths 64, 128, 256 (strides 1, 2, 2), GN-ReLU, global average
                  pooling, a linear layer; convolutions without bias. 2,748,890 parameters.
                  (De et al. also standardise the conv weights; that reparametrisation is not
                  in this export.)
  vit_small.onnx  a small Vision Transformer for 3x32x32 images, 10 classes: 4x4 patches by a
                  conv embedding (64 tokens of width 128), a learned position embedding added
                  as a parameter, 4 pre-LayerNorm blocks (nn.MultiheadAttention with 4 heads,
                  batch_first=True; MLP 256 with GELU), a final LayerNorm, the mean over the
                  tokens (mean pooling; a class token, a learned token concatenated, imports too) and
                  a linear head. 545,930 parameters.

Both with the export settings of docs/onnx.md:

    torch.onnx.export(m, x, f, opset_version=17, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})

Seeded (torch.manual_seed(0) per model): running it again writes the same weights. Each file is
checked with onnx.checker, and its parameter count printed.
"""
import os
import sys

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

EXPORT = dict(
    opset_version=17,
    training=torch.onnx.TrainingMode.TRAINING,
    do_constant_folding=False,
    input_names=["input"],
    output_names=["logits"],
    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
)
GROUPS = 16  # GroupNorm groups, as in De et al. 2022


# ---- WRN-16-4 with GroupNorm -----------------------------------------------------------------

class PreActBlock(nn.Module):
    """GN-ReLU-conv3x3(stride)-GN-ReLU-conv3x3; the shortcut is the identity, or a 1x1 conv
    (stride) of the pre-activated input where the width or the resolution changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.gn1 = nn.GroupNorm(GROUPS, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(GROUPS, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x):
        a = F.relu(self.gn1(x))
        out = self.conv1(a)
        out = self.conv2(F.relu(self.gn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNetGN(nn.Module):
    def __init__(self, depth=16, k=4, classes=10):
        super().__init__()
        n = (depth - 4) // 6  # blocks per group: 2 for depth 16
        widths = [16 * k, 32 * k, 64 * k]
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks, cin = [], 16
        for w, s in zip(widths, [1, 2, 2]):
            for b in range(n):
                blocks.append(PreActBlock(cin, w, s if b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.gn = nn.GroupNorm(GROUPS, cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.relu(self.gn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# ---- a small ViT ---------------------------------------------------------------------------

class ViTBlock(nn.Module):
    """pre-LayerNorm: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU"""

    def __init__(self, d, heads, mlp):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, d)

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class SmallViT(nn.Module):
    def __init__(self, image=32, patch=4, d=128, depth=4, heads=4, mlp=256, classes=10):
        super().__init__()
        t = (image // patch) ** 2
        self.embed = nn.Conv2d(3, d, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, t, d))  # learned positions [1, T, d]
        self.blocks = nn.Sequential(*[ViTBlock(d, heads, mlp) for _ in range(depth)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)                  # [B, d, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)   # [B, T, d]
        x = self.blocks(x + self.pos)
        return self.head(self.ln(x).mean(dim=1))


MODELS = {
    "wrn16_4": WideResNetGN,
    "vit_small": SmallViT,
}


def export(name, out_dir):
    torch.manual_seed(0)
    m = MODELS[name]()
    m.train()
    x = torch.randn(2, 3, 32, 32)
    path = os.path.join(out_dir, name + ".onnx")
    torch.onnx.export(m, x, path, **EXPORT)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    n = sum(p.numel() for p in m.parameters())
    print(f"{path}: {n:,} parameters")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in MODELS:
        export(name, out)


if __name__ == "__main__":
    main()
