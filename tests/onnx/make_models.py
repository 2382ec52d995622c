#!/usr/bin/python3
"""Writes small ONNX test models for the ONNX importer's parity tests (tests/test_onnx.cpp).

Usage: /usr/bin/python3 tests/onnx/make_models.py OUTDIR [--only SUBSTRING]

For each case it writes OUTDIR/<case>.onnx, and for the cases the importer must accept also a raw
little-endian float32 input [batch,C,H,W] and the PyTorch model's eval-mode output [batch,K]
(<net>.input.bin, <net>.expected.bin, shared by all cases of one network). OUTDIR/cases.json lists
the cases: name, file, expect ("ok" or "error"), opset, mode, ops (sorted distinct op_types), and
for "ok" input_shape, classes, batch, input, expected; for "error" message_contains (the offending
node's name and op_type, which the importer's one-line error must contain).

Modes: "eval" is the usual inference export (batchnorm folded into convs by the exporter);
"preserve" is a training-mode export (TrainingMode.TRAINING, no constant folding) so that
BatchNormalization (with its extra running-stat outputs, unused; training_mode=1 at opset 17) and
Dropout (with training_mode=True at opsets 13 and 17) stay in the graph.
Its reference output is still the eval-mode output: the importer runs batchnorm with the running
statistics stored in the file and treats dropout as identity. The export runs with every
batchnorm's momentum at 0, so the file holds exactly the statistics the reference used.

Needs only Debian's python3-torch 1.13, python3-torchvision 0.14, python3-onnx 1.12, python3-numpy;
downloads nothing. Deterministic: each network is seeded from its name (all its cases share its
weights and input). Batchnorm layers get random weight and bias, and running statistics measured
on random inputs then perturbed, so folding is not trivial and deep nets keep a live signal.
Every written file passes onnx.checker (full check), and every "ok" file is run by a small
torch-based ONNX interpreter below and must reproduce the reference output (a guard on the graph
edits made here; --no-selfcheck skips it).
"""
import argparse
import copy
import io
import json
import os
import sys
import time
import warnings
import zlib

import numpy as np
import onnx
from onnx import helper, numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

BATCH = 2
K = 5
OPSETS = (11, 13, 17)
ERROR_OPSET = 13


# ----------------------------------------------------------------------------- networks

def gap_head(c):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, K)]


def seq(*layers):
    return nn.Sequential(*layers)


def conv_variants():
    return seq(
        nn.Conv2d(3, 8, 3, padding=1, bias=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
        nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=True),    # depthwise, stride 2
        nn.Conv2d(8, 16, 3, padding=2, dilation=2, bias=False),          # dilation 2
        nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 1, padding=0, bias=True),                      # pointwise
        nn.Conv2d(16, 8, 3, stride=2, padding=0, bias=True),             # stride 2, no padding
        nn.BatchNorm2d(8), nn.ReLU(),
        *gap_head(8))


def conv_non_square():
    """Kernels of another height than width, as Inception v3's factorized convs: 1x7 and 7x1
    (their padding along one axis only), 3x1 strided, a dilated 1x3, a depthwise 1x5."""
    return seq(
        nn.Conv2d(3, 8, (1, 7), padding=(0, 3)), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, (7, 1), padding=(3, 0), bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, (3, 1), stride=2, padding=(1, 0)), nn.ReLU(),
        nn.Conv2d(16, 16, (1, 3), padding=(0, 2), dilation=2), nn.ReLU(),
        nn.Conv2d(16, 16, (1, 5), padding=(0, 2), groups=16), nn.ReLU(),
        *gap_head(16))


def conv_asymmetric_pads():
    # ZeroPad2d takes (left, right, top, bottom); the Pad nodes are merged into the convs after
    # export, giving Conv pads [top, left, bottom, right] = [0,0,1,1], [1,0,2,1] and [2,3,1,1].
    return seq(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, padding=0), nn.ReLU(),
        nn.ZeroPad2d((0, 1, 1, 2)), nn.Conv2d(8, 8, 3, stride=2, padding=0), nn.ReLU(),
        nn.ZeroPad2d((2, 0, 1, 0)), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        *gap_head(8))


def gemm():
    return seq(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, K))


class MatMulAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3 * 8 * 8, 16) * 0.1)
        self.b = nn.Parameter(torch.randn(16) * 0.1)
        self.fc = nn.Linear(16, K)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc(torch.relu(x @ self.w + self.b))


def relu6_clip():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
               nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU6(), *gap_head(8))


def hardswish():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(), *gap_head(8))


def hardsigmoid():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.Hardsigmoid(),
               nn.Conv2d(8, 8, 3, padding=1), *gap_head(8))


def sigmoid_silu():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.Sigmoid(),
               nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), *gap_head(8))


class SqueezeExcite(nn.Module):
    def __init__(self, use_mean):
        super().__init__()
        self.use_mean = use_mean
        self.stem = seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.head = seq(*gap_head(8))

    def forward(self, x):
        x = self.stem(x)
        s = x.mean((2, 3), keepdim=True) if self.use_mean else self.pool(x)
        s = self.gate(self.fc2(torch.relu(self.fc1(s))))
        return self.head(s * x)


class SqueezeExciteLinear(nn.Module):
    """The squeeze-excite of SENet's reference code: linear layers on the pooled features, the
    gate viewed back as N,C,1,1 and expanded to the input's shape."""
    def __init__(self):
        super().__init__()
        self.stem = seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = seq(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 8), nn.Sigmoid())
        self.head = seq(*gap_head(8))

    def forward(self, x):
        x = self.stem(x)
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return self.head(x * y.expand_as(x))


def maxpool():
    return seq(nn.Conv2d(3, 8, 3, padding=1),                       # 16x16
               nn.MaxPool2d(3, 2, 1), nn.ReLU(),                    # 8x8
               nn.Conv2d(8, 8, 3, padding=1),
               nn.MaxPool2d(2, 1),                                  # 7x7
               nn.MaxPool2d(2, 2, ceil_mode=True),                  # 4x4 (floor would give 3x3)
               *gap_head(8))


def avgpool():
    return seq(nn.Conv2d(3, 8, 3, padding=1),                                     # 17x17
               nn.AvgPool2d(3, 2, 1, count_include_pad=True), nn.ReLU(),          # 9x9
               nn.Conv2d(8, 8, 3, padding=1),
               nn.AvgPool2d(3, 2, 1, count_include_pad=False), nn.ReLU(),         # 5x5
               nn.Conv2d(8, 8, 3, padding=1),
               nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),       # 3x3 (floor: 2x2)
               *gap_head(8))


class ConcatPoolHead(nn.Module):
    """fastai's head: the global max and average pools joined (AdaptiveConcatPool2d), then
    batchnorm, dropout and linear layers on the features; and a max over height and width."""
    def __init__(self):
        super().__init__()
        self.body = seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.max, self.avg = nn.AdaptiveMaxPool2d(1), nn.AdaptiveAvgPool2d(1)
        self.head = seq(nn.Flatten(), nn.BatchNorm1d(24), nn.Dropout(0.25), nn.Linear(24, 16), nn.ReLU(),
                        nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, K))

    def forward(self, x):
        x = self.body(x)
        return self.head(torch.cat([self.max(x), self.avg(x), x.amax((2, 3), keepdim=True)], 1))


class GapMean(nn.Module):
    def __init__(self, keepdim):
        super().__init__()
        self.keepdim = keepdim
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, K)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        if self.keepdim:
            x = torch.flatten(x.mean((2, 3), keepdim=True), 1)
        else:
            x = x.mean((2, 3))
        return self.fc(x)


class ReshapeNet(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)    # 4x6x6
        self.fc = nn.Linear(4 * 6 * 6, K)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        if self.how == "view":
            x = x.view(x.size(0), -1)
        elif self.how == "flatten":
            x = torch.flatten(x, 1)
        else:
            x = x.reshape(-1, 4 * 6 * 6)
        return self.fc(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = seq(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.short is None else self.short(x)))


def residual_add():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
               BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), *gap_head(16))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = seq(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = seq(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.conv = nn.Conv2d(4 + 4 + 3, 8, 3, padding=1)
        self.head = seq(*gap_head(8))

    def forward(self, x):
        return self.head(torch.relu(self.conv(torch.cat([self.a(x), self.b(x), x], 1))))


class DenseNet(nn.Module):
    """A DenseNet block as torchvision writes it: each layer (batchnorm, relu, conv) reads the concat
    of every earlier output, the first a concat of one tensor; the last concat joins 29."""
    def __init__(self, layers=28, growth=2):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        c = [4 + growth * k for k in range(layers + 1)]
        self.layers = nn.ModuleList(seq(nn.BatchNorm2d(c[k]), nn.ReLU(), nn.Conv2d(c[k], growth, 3, padding=1, bias=False))
                                    for k in range(layers))
        self.head = seq(nn.BatchNorm2d(c[-1]), nn.ReLU(), *gap_head(c[-1]))

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(torch.cat(features, 1))


def dropout_identity():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), *gap_head(8))


def small_stem_resnet18():
    import torchvision
    m = torchvision.models.resnet18(weights=None, num_classes=K)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def mobilenet_v2():
    import torchvision
    return torchvision.models.mobilenet_v2(weights=None, num_classes=K, width_mult=0.5)


def mobilenet_v3_small():
    import torchvision
    m = torchvision.models.mobilenet_v3_small(weights=None, num_classes=K)
    nn.init.normal_(m.classifier[-1].weight, 0.0, 0.5)   # torchvision's std 0.01 gives logits ~0.01
    return m


def shufflenet_v2():
    import torchvision
    m = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=K)
    nn.init.normal_(m.fc.weight, 0.0, 0.5)
    return m


class ChannelSplit(nn.Module):
    """Channels split three ways torch writes them: torch.split (Split), a slice with constant
    bounds (Slice), chunk (Split, or Slice with computed bounds); then a channel shuffle of 4
    groups written with permute."""
    def __init__(self):
        super().__init__()
        self.stem = seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.a = seq(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = seq(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = seq(*gap_head(16))

    def forward(self, x):
        x = self.stem(x)
        a, b = torch.split(x, [3, 5], dim=1)
        c, d = b[:, 1:].chunk(2, dim=1)
        y = torch.cat([self.a(a), self.b(torch.cat([c, d], 1)), x[:, 2:6], c, d], 1)   # 4 + 4 + 4 + 2 + 2
        n, ch, h, w = y.shape
        y = y.reshape(n, 4, ch // 4, h, w).permute(0, 2, 1, 3, 4).reshape(n, ch, h, w)
        return self.head(y)


# error networks: each holds exactly one thing the importer does not support

def leaky_relu():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
               nn.LeakyReLU(0.2), *gap_head(8))


def tanh_elu():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
               nn.ELU(0.5), nn.Conv2d(8, 8, 1), nn.ELU(), *gap_head(8))


def gelu():  # torch 1.13 writes GELU as x * (1 + erf(x / sqrt 2)) * 0.5 (a Gelu op from opset 20)
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), *gap_head(8))


def mish_softplus():  # torch writes Mish as x * tanh(softplus(x)) below opset 18
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.Mish(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
               nn.Softplus(), nn.Conv2d(8, 8, 1), nn.Mish(), *gap_head(8))


def prelu():  # one slope for all (torch's default) and one per channel, on an image and on features
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6), nn.PReLU(6), nn.Linear(6, 5))


def err_log_sigmoid():  # torch writes Sigmoid, Log
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.LogSigmoid(), *gap_head(8))


class ErrUpsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = seq(*gap_head(8))

    def forward(self, x):
        x = F.interpolate(torch.relu(self.conv1(x)), scale_factor=2, mode="nearest")
        return self.head(torch.relu(self.conv2(x)))


def strides_and_pools_non_square():
    """A spectrogram-style net: convs of strides 2x1 and 1x2, pools of 2x1 and 1x3 windows, their
    own strides and paddings per axis, a ceil-mode one."""
    return seq(
        nn.Conv2d(3, 8, 3, stride=(2, 1), padding=1), nn.ReLU(),
        nn.MaxPool2d((2, 1)), nn.Conv2d(8, 8, (3, 5), stride=(1, 2), padding=(1, 2)), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), count_include_pad=False),
        nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True), *gap_head(8))


def err_conv_dilation_2x1():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
               nn.Conv2d(8, 8, 3, dilation=(2, 1), padding=(2, 1)), nn.ReLU(), *gap_head(8))


def softmax_output():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *gap_head(8), nn.Softmax(dim=1))


def log_softmax_output():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *gap_head(8), nn.LogSoftmax(dim=1))


def err_softmax_inside():
    return seq(nn.Conv2d(3, 8, 3, padding=1), nn.Softmax(dim=1), *gap_head(8))


class ErrSub(nn.Module):  # a Sub between layers (one on the input is read as its normalization)
    def __init__(self):
        super().__init__()
        self.stem = seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = seq(*gap_head(8))

    def forward(self, x):
        return self.head(self.stem(x) - 0.5)


class ErrTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *gap_head(8))

    def forward(self, x):
        return self.body(x.transpose(2, 3))


# ----------------------------------------------------------------------------- onnx edits

def _consumers(graph, name):
    return [n for n in graph.node if name in n.input]


def _constant_array(graph, name):
    """The value of a tensor computed from initializers and Constant nodes only, else None."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    producer = next((n for n in graph.node if name in n.output), None)
    if producer is None or producer.op_type not in OPS:
        return None
    ins = []
    for i in producer.input:
        value = _constant_array(graph, i) if i else None
        if i and value is None:
            return None
        ins.append(None if value is None else torch.from_numpy(np.array(value)))
    attrs = {a.name: helper.get_attribute_value(a) for a in producer.attribute}
    outs = OPS[producer.op_type](ins, attrs)
    return outs[list(producer.output).index(name)].numpy()


def remove_dead_nodes(graph):
    """Drops nodes none of whose outputs is used, and initializers nobody reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def merge_pads_into_convs(model):
    """Folds each Pad (constant 0) that feeds only a Conv into the Conv's pads attribute."""
    g = model.graph
    merged = 0
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        users = _consumers(g, pad.output[0])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0]:
            raise RuntimeError(f"Pad {pad.name} does not feed one Conv")
        conv = users[0]
        mode = [helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"]
        if mode and mode[0] not in (b"constant", "constant"):
            raise RuntimeError(f"Pad {pad.name} mode {mode}")
        if len(pad.input) > 2 and pad.input[2]:
            value = _constant_array(g, pad.input[2])
            if value is None or float(value) != 0.0:
                raise RuntimeError(f"Pad {pad.name} value is not a constant 0")
        amounts = _constant_array(g, pad.input[1])
        if amounts is None:
            raise RuntimeError(f"Pad {pad.name}: pads are not constant")
        amounts = [int(v) for v in amounts.reshape(-1)]
        # ONNX Pad on NCHW: [n_b, c_b, h_b, w_b, n_e, c_e, h_e, w_e]
        if len(amounts) != 8 or amounts[0] or amounts[1] or amounts[4] or amounts[5] or min(amounts) < 0:
            raise RuntimeError(f"Pad {pad.name}: unexpected pads {amounts}")
        add = [amounts[2], amounts[3], amounts[6], amounts[7]]   # [top, left, bottom, right]
        attrs = {a.name: a for a in conv.attribute}
        old = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        new = [o + a for o, a in zip(old, add)]
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        g.node.remove(pad)
        merged += 1
    if merged == 0:
        raise RuntimeError("no Pad node to merge")
    remove_dead_nodes(g)   # the Constant/ConstantOfShape/.../Cast chains that computed the pads
    return model


def insert_identity(model):
    """Puts an Identity node between the first Conv and its consumer(s)."""
    g = model.graph
    idx, conv = next((i, n) for i, n in enumerate(g.node) if n.op_type == "Conv")
    src = conv.output[0]
    dst = src + "_identity"
    for n in _consumers(g, src):
        for j, name in enumerate(n.input):
            if name == src:
                n.input[j] = dst
    g.node.insert(idx + 1, helper.make_node("Identity", [src], [dst], name="inserted_Identity"))
    return model


def name_nodes(model):
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def keep_first_output(model):
    g = model.graph
    if g.output[0].name != "logits":
        raise RuntimeError(f"first graph output is {g.output[0].name}, not logits")
    while len(g.output) > 1:
        del g.output[1]


def set_bn_momentum(model, torch_momentum):
    """The export ran with momentum 0 (ONNX momentum 1); write the model's real value back."""
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            for a in n.attribute:
                if a.name == "momentum":
                    a.f = 1.0 - torch_momentum


# ----------------------------------------------------------------------------- reference interpreter

def _ints(a, key, default):
    return [int(v) for v in a.get(key, default)]


def _pool_pads(x, pads, value):
    """Returns (x, symmetric padding) for torch; pads are ONNX [top, left, bottom, right]."""
    if pads[0] == pads[2] and pads[1] == pads[3]:
        return x, (pads[0], pads[1])
    return F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=value), (0, 0)


def _conv(i, a):
    x, w = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    assert a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    x, pad = _pool_pads(x, _ints(a, "pads", [0] * 4), 0.0)
    return [F.conv2d(x, w, b, _ints(a, "strides", [1, 1]), pad, _ints(a, "dilations", [1, 1]),
                     int(a.get("group", 1)))]


def _maxpool(i, a):
    x, pad = _pool_pads(i[0], _ints(a, "pads", [0] * 4), float("-inf"))
    k = _ints(a, "kernel_shape", None)
    return [F.max_pool2d(x, k, _ints(a, "strides", [1, 1]), pad, _ints(a, "dilations", [1, 1]),
                         bool(a.get("ceil_mode", 0)))]


def _avgpool(i, a):
    pads = _ints(a, "pads", [0] * 4)
    assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric AveragePool pads"
    return [F.avg_pool2d(i[0], _ints(a, "kernel_shape", None), _ints(a, "strides", [1, 1]),
                         (pads[0], pads[1]), bool(a.get("ceil_mode", 0)),
                         bool(a.get("count_include_pad", 0)))]


def _bn(i, a):
    x, s, b, m, v = i[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    eps = float(a.get("epsilon", 1e-5))
    return [(x - m.reshape(shape)) / torch.sqrt(v.reshape(shape) + eps) * s.reshape(shape) + b.reshape(shape)]


def _gemm(i, a):
    A = i[0].t() if a.get("transA", 0) else i[0]
    B = i[1].t() if a.get("transB", 0) else i[1]
    y = float(a.get("alpha", 1.0)) * (A @ B)
    if len(i) > 2 and i[2] is not None:
        y = y + float(a.get("beta", 1.0)) * i[2]
    return [y]


def _axes(i, a):
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(i) > 1 and i[1] is not None:
        return [int(v) for v in i[1].reshape(-1)]
    return None


def _reshape(i, a):
    x, shape = i[0], [int(v) for v in i[1].reshape(-1)]
    shape = [x.shape[j] if s == 0 else s for j, s in enumerate(shape)]
    return [x.reshape(shape)]


def _unsqueeze(i, a):
    y = i[0]
    for ax in sorted(_axes(i, a)):
        y = y.unsqueeze(ax)
    return [y]


def _squeeze(i, a):
    axes = _axes(i, a)
    y = i[0]
    for ax in sorted(axes if axes is not None else [d for d, s in enumerate(y.shape) if s == 1], reverse=True):
        y = y.squeeze(ax)
    return [y]


def _reduce_mean(i, a):
    axes = _axes(i, a) or list(range(i[0].dim()))
    return [i[0].mean(axes, keepdim=bool(a.get("keepdims", 1)))]


def _clip(i, a):
    lo = i[1].item() if len(i) > 1 and i[1] is not None else a.get("min", None)
    hi = i[2].item() if len(i) > 2 and i[2] is not None else a.get("max", None)
    return [torch.clamp(i[0], lo, hi)]


def _constant(i, a):
    if "value" in a:
        return [torch.from_numpy(numpy_helper.to_array(a["value"]).copy())]
    raise RuntimeError(f"Constant with {list(a)}")


def _flatten(i, a):
    ax = int(a.get("axis", 1))
    s = i[0].shape
    return [i[0].reshape(int(np.prod(s[:ax])), -1)]


def _gather(i, a):
    return [torch.from_numpy(np.asarray(np.take(i[0].numpy(), i[1].numpy(), int(a.get("axis", 0)))))]


def _pad(i, a):
    p = [int(v) for v in i[1].reshape(-1)]
    n = len(p) // 2
    torch_pads = []
    for d in reversed(range(n)):
        torch_pads += [p[d], p[d + n]]
    value = i[2].item() if len(i) > 2 and i[2] is not None else 0.0
    return [F.pad(i[0], torch_pads, value=value)]


def _slice(i, a):
    x = i[0].numpy()
    starts, ends = [int(v) for v in i[1]], [int(v) for v in i[2]]
    axes = [int(v) for v in i[3]] if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = [int(v) for v in i[4]] if len(i) > 4 and i[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[ax] = slice(s, e, st)   # numpy clamps out-of-range bounds like ONNX does
    return [torch.from_numpy(np.ascontiguousarray(x[tuple(index)]))]


def _split(i, a):
    x = i[0]
    axis = int(a.get("axis", 0))
    sizes = a.get("split") or (None if len(i) < 2 or i[1] is None else [int(v) for v in i[1]])
    if sizes is None:
        raise RuntimeError("Split without sizes")   # the interpreter is told them: torch writes them
    return list(torch.split(x, [int(v) for v in sizes], axis))


def _constant_of_shape(i, a):
    value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    return [torch.from_numpy(np.full([int(v) for v in i[0]], value.reshape(-1)[0], value.dtype))]


def _cast(i, a):
    dtype = onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[int(a["to"])]
    return [torch.from_numpy(i[0].numpy().astype(dtype))]


OPS = {
    "Conv": _conv, "MaxPool": _maxpool, "AveragePool": _avgpool, "BatchNormalization": _bn,
    "Gemm": _gemm, "MatMul": lambda i, a: [i[0] @ i[1]],
    "Add": lambda i, a: [i[0] + i[1]], "Sub": lambda i, a: [i[0] - i[1]],
    "Mul": lambda i, a: [i[0] * i[1]], "Div": lambda i, a: [i[0] / i[1]],
    "Relu": lambda i, a: [torch.relu(i[0])], "LeakyRelu": lambda i, a: [F.leaky_relu(i[0], float(a.get("alpha", 0.01)))], "Sigmoid": lambda i, a: [torch.sigmoid(i[0])],
    "Tanh": lambda i, a: [torch.tanh(i[0])], "Softplus": lambda i, a: [F.softplus(i[0])], "Erf": lambda i, a: [torch.erf(i[0])],
    "PRelu": lambda i, a: [torch.where(i[0] >= 0, i[0], i[0] * i[1])], "Elu": lambda i, a: [F.elu(i[0], float(a.get("alpha", 1.0)))],
    "Clip": _clip,
    "HardSigmoid": lambda i, a: [torch.clamp(float(a.get("alpha", 0.2)) * i[0] + float(a.get("beta", 0.5)), 0, 1)],
    "HardSwish": lambda i, a: [i[0] * torch.clamp(i[0] / 6 + 0.5, 0, 1)],
    "GlobalAveragePool": lambda i, a: [i[0].mean((2, 3), keepdim=True)],
    "ReduceMean": _reduce_mean,
    "ReduceMax": lambda i, a: [i[0].amax(_axes(i, a) or list(range(i[0].dim())), keepdim=bool(a.get("keepdims", 1)))],
    "GlobalMaxPool": lambda i, a: [i[0].amax((2, 3), keepdim=True)],
    "Identity": lambda i, a: [i[0]], "Dropout": lambda i, a: [i[0], torch.ones_like(i[0], dtype=torch.bool)],
    "Flatten": _flatten, "Reshape": _reshape, "Shape": lambda i, a: [torch.tensor(i[0].shape, dtype=torch.int64)],
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Expand": lambda i, a: [i[0].expand(*[int(v) for v in i[1]])],
    "Concat": lambda i, a: [torch.cat([t for t in i if t is not None], int(a["axis"]))],
    "Constant": _constant, "Pad": _pad, "Slice": _slice, "Split": _split,
    "ConstantOfShape": _constant_of_shape, "Cast": _cast,
    "Transpose": lambda i, a: [i[0].permute(*[int(v) for v in a["perm"]])],
    "Softmax": lambda i, a: [torch.softmax(i[0], int(a.get("axis", -1)))],
    "LogSoftmax": lambda i, a: [torch.log_softmax(i[0], int(a.get("axis", -1)))],
}


def interpret(model, x):
    """Runs the ONNX graph on x with torch ops (eval semantics: batchnorm running stats, no dropout)."""
    g = model.graph
    env = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in g.initializer}
    env[g.input[0].name] = x
    for n in g.node:
        if n.op_type not in OPS:
            raise RuntimeError(f"self-check interpreter lacks op {n.op_type} ({n.name})")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        outs = OPS[n.op_type]([env[name] if name else None for name in n.input], attrs)
        for name, value in zip(n.output, outs):
            if name:
                env[name] = value
    return env[g.output[0].name]


# ----------------------------------------------------------------------------- cases

class Net:
    def __init__(self, name, build, shape, modes=("eval", "preserve"), opsets=OPSETS, post=None,
                 error_op=None, error_pick=None, static_batch=False, logits_before_last=False):
        self.name, self.build, self.shape = name, build, list(shape)
        self.static_batch = static_batch   # exported without dynamic axes: the file's batch is fixed
        # the reference is the output before the last module (a final softmax the importer leaves out)
        self.logits_before_last = logits_before_last
        self.modes, self.opsets, self.post = modes, opsets, post
        self.error_op, self.error_pick = error_op, error_pick
        if error_op:
            self.modes, self.opsets = ("eval",), (ERROR_OPSET,)

    def case_names(self):
        return [f"{self.name}_op{o}_{m}" for o in self.opsets for m in self.modes]


def unequal_dilations(node):
    s = [a for a in node.attribute if a.name == "dilations"]
    return bool(s) and len(set(s[0].ints)) > 1


S16 = (3, 16, 16)
NETS = [
    Net("conv_variants", conv_variants, S16),
    Net("conv_non_square", conv_non_square, S16),
    Net("conv_asymmetric_pads", conv_asymmetric_pads, S16, modes=("eval",), post=merge_pads_into_convs),
    Net("gemm", gemm, (3, 8, 8)),
    Net("matmul_add", MatMulAdd, (3, 8, 8)),
    Net("relu6_clip", relu6_clip, S16),
    Net("hardswish", hardswish, S16),
    Net("hardsigmoid", hardsigmoid, S16),
    Net("sigmoid_silu", sigmoid_silu, S16),
    Net("squeeze_excite", lambda: SqueezeExcite(False), S16),
    Net("squeeze_excite_mean", lambda: SqueezeExcite(True), S16),
    Net("squeeze_excite_linear", SqueezeExciteLinear, S16),
    Net("maxpool", maxpool, S16),
    Net("avgpool", avgpool, (3, 17, 17)),
    Net("gap_reduce_mean", lambda: GapMean(False), S16),
    Net("concat_pool_head", ConcatPoolHead, S16),
    Net("gap_reduce_mean_keepdim", lambda: GapMean(True), S16),
    Net("reshape_view", lambda: ReshapeNet("view"), (3, 12, 12)),
    Net("reshape_flatten", lambda: ReshapeNet("flatten"), (3, 12, 12)),
    Net("reshape_const", lambda: ReshapeNet("const"), (3, 12, 12)),
    Net("residual_add", residual_add, S16),
    Net("concat", ConcatNet, S16),
    Net("densenet", DenseNet, (3, 12, 12)),
    Net("dropout_identity", dropout_identity, S16, post=insert_identity),
    Net("resnet18", small_stem_resnet18, (3, 32, 32)),
    Net("mobilenet_v2", mobilenet_v2, (3, 32, 32)),
    Net("mobilenet_v3_small", mobilenet_v3_small, (3, 32, 32)),
    Net("shufflenet_v2", shufflenet_v2, (3, 32, 32)),
    Net("shufflenet_v2_static_batch", shufflenet_v2, (3, 32, 32), modes=("eval",), opsets=(13,), static_batch=True),
    Net("channel_split", ChannelSplit, S16),
    Net("leaky_relu", leaky_relu, S16),
    Net("tanh_elu", tanh_elu, S16),
    Net("mish_softplus", mish_softplus, S16),
    Net("gelu", gelu, S16),
    Net("prelu", prelu, S16),
    Net("error_log_sigmoid", err_log_sigmoid, S16, error_op="Log"),
    Net("error_resize", ErrUpsample, S16, error_op="Resize"),
    Net("strides_and_pools_non_square", strides_and_pools_non_square, (3, 24, 20)),
    Net("error_conv_dilation_2x1", err_conv_dilation_2x1, S16, error_op="Conv", error_pick=unequal_dilations),
    Net("softmax_output", softmax_output, S16, modes=("eval",), logits_before_last=True),
    Net("log_softmax_output", log_softmax_output, S16, modes=("eval",), logits_before_last=True),
    Net("error_softmax_inside", err_softmax_inside, S16, error_op="Softmax"),
    Net("error_sub", ErrSub, S16, error_op="Sub"),
    Net("error_transpose", ErrTranspose, S16, error_op="Transpose"),
]


def sample_input(shape, n, gen):
    """Noise plus a per-sample, per-channel offset, so that the samples' outputs differ clearly."""
    return torch.randn([n] + shape, generator=gen) + torch.randn([n, shape[0], 1, 1], generator=gen)


def randomize_bn(model, shape, gen):
    """Random batchnorm weight and bias; running statistics measured on random inputs, then
    perturbed (variance x0.5..2, mean moved by up to half a standard deviation), so that folding
    is not trivial while the activations neither vanish nor blow up through deep nets."""
    bns = bn_modules(model)
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(c, generator=gen) - 0.5)
            m.reset_running_stats()
            m.momentum = None   # cumulative average: the running stats become this batch's
        model.train()
        model(sample_input(shape, 16, gen))
        model.eval()
        for m, momentum in zip(bns, momenta):
            c = m.num_features
            m.momentum = momentum
            std = m.running_var.sqrt()
            m.running_mean.add_((torch.rand(c, generator=gen) - 0.5) * std)
            m.running_var.mul_(torch.rand(c, generator=gen) * 1.5 + 0.5)


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def export(model, x, opset, mode, static_batch=False):
    """Returns the exported ModelProto; leaves the model's state and mode as they were (eval)."""
    f = io.BytesIO()
    kw = dict(opset_version=opset, input_names=["input"], output_names=["logits"],
              dynamic_axes=None if static_batch else {"input": {0: "batch"}, "logits": {0: "batch"}})
    if mode == "eval":
        model.eval()
        torch.onnx.export(model, x, f, training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True, **kw)
    else:
        bns = bn_modules(model)
        momenta = [m.momentum for m in bns]
        saved = copy.deepcopy(model.state_dict())
        try:
            for m in bns:
                m.momentum = 0.0   # the tracing forward runs in train mode: keep running stats as they are
            model.train()
            torch.onnx.export(model, x, f, training=torch.onnx.TrainingMode.TRAINING,
                              do_constant_folding=False, **kw)
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            model.load_state_dict(saved)
            model.eval()
    proto = onnx.load_from_string(f.getvalue())
    if mode == "preserve" and bn_modules(model):
        momenta = {m.momentum for m in bn_modules(model)}
        if len(momenta) == 1 and None not in momenta:
            set_bn_momentum(proto, momenta.pop())
    return proto


def check_bn_stats(proto, model):
    """Every BatchNormalization's mean/var in the file equals some batchnorm's running stats."""
    stats = [(m.running_mean.numpy(), m.running_var.numpy()) for m in bn_modules(model)]
    for n in proto.graph.node:
        if n.op_type == "BatchNormalization":
            mean, var = _constant_array(proto.graph, n.input[3]), _constant_array(proto.graph, n.input[4])
            if not any(np.array_equal(mean, m) and np.array_equal(var, v) for m, v in stats):
                raise RuntimeError(f"{n.name}: running stats in the file differ from the model's")


def make_net(net, out, wanted, selfcheck):
    seed = zlib.crc32(net.name.encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = net.build()
    randomize_bn(model, net.shape, gen)
    model.eval()
    x = sample_input(net.shape, BATCH, gen)
    with torch.no_grad():
        computed = model(x)   # what the ONNX graph computes
        ref = model[:-1](x) if net.logits_before_last else computed
    assert list(ref.shape) == [BATCH, K], ref.shape
    assert torch.isfinite(ref).all()
    state = copy.deepcopy(model.state_dict())

    cases = []
    io_written = False
    for opset in net.opsets:
        for mode in net.modes:
            name = f"{net.name}_op{opset}_{mode}"
            if name not in wanted:
                continue
            t0 = time.time()
            proto = export(model, x, opset, mode, net.static_batch)
            for k, v in model.state_dict().items():
                if not torch.equal(v, state[k]):
                    raise RuntimeError(f"{name}: export changed {k}")
            if net.post:
                proto = net.post(proto)
            keep_first_output(proto)
            if net.error_op:
                name_nodes(proto)   # "ok" files keep the exporter's names as they are
            onnx.checker.check_model(proto, full_check=True)
            ops = sorted({n.op_type for n in proto.graph.node})
            fname = f"{name}.onnx"
            case = {"name": name, "file": fname}
            if net.error_op:
                bad = [n for n in proto.graph.node if n.op_type == net.error_op
                       and (net.error_pick is None or net.error_pick(n))]
                if len(bad) != 1:
                    raise RuntimeError(f"{name}: {len(bad)} candidate {net.error_op} nodes")
                case.update(expect="error", message_contains=[bad[0].name, bad[0].op_type],
                            opset=opset, mode=mode, ops=ops)
                note = f"error at {bad[0].name}"
            else:
                n_bn = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
                if mode == "preserve" and n_bn != len(bn_modules(model)):
                    raise RuntimeError(f"{name}: {n_bn} BatchNormalization nodes for {len(bn_modules(model))} batchnorms")
                check_bn_stats(proto, model)
                if selfcheck:
                    with torch.no_grad():
                        got = interpret(proto, x)
                    err = float((got - computed).abs().max())
                    tol = 1e-4 * max(1.0, float(computed.abs().max()))
                    if not err <= tol:
                        raise RuntimeError(f"{name}: ONNX graph gives max error {err} > {tol}")
                if not io_written:
                    x.numpy().astype("<f4").tofile(os.path.join(out, f"{net.name}.input.bin"))
                    ref.numpy().astype("<f4").tofile(os.path.join(out, f"{net.name}.expected.bin"))
                    io_written = True
                case.update(expect="ok", input_shape=net.shape, classes=K, batch=BATCH,
                            input=f"{net.name}.input.bin", expected=f"{net.name}.expected.bin",
                            opset=opset, mode=mode, ops=ops)
                note = "ok"
            onnx.save(proto, os.path.join(out, fname))
            cases.append(case)
            print(f"{name:40s} {note:28s} {time.time() - t0:5.2f}s  {' '.join(ops)}", flush=True)
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("--only", default=None, help="make only the cases whose name contains this")
    p.add_argument("--no-selfcheck", action="store_true", help="skip running the graphs with the interpreter")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    start = time.time()
    cases = []
    for net in NETS:
        wanted = {c for c in net.case_names() if args.only is None or args.only in c}
        if wanted:
            cases += make_net(net, args.outdir, wanted, not args.no_selfcheck)
    if not cases:
        sys.exit(f"no case matches --only {args.only!r}")
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))
    with open(os.path.join(args.outdir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(cases)} cases written to {args.outdir} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
