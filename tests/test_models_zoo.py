"""Model zoo: shapes, layer names, architecture facts, preprocessing, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import zoo
from runtime.errors import AcompileError


def test_mlp_contract():
    m = zoo.build("mlp")
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (784, 250, 10)
    assert m(torch.randn(3, 784)).shape == (3, 10)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert isinstance(zoo.build("mlp", activation="sigmoid").act, nn.Sigmoid)
    pre = zoo.default_preprocessing("mlp")
    assert pre.layout == "flat" and pre.input_shape == [1, 28, 28]


def test_lenet5_shapes():
    m = zoo.build("lenet5")
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert zoo.default_preprocessing("lenet5").layout == "NCHW"


def test_resnet32_architecture():
    m = zoo.build("resnet32")
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(m.layers) == 15  # 3 stages x 5 basic blocks
    assert len(convs) == 31 + 2 and len(bns) == len(convs)  # 31 main convs + 2 option-B projections
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    a = zoo.build("resnet32", shortcut="A")
    assert sum(p.numel() for p in a.parameters() if p.dim() > 1) == 461_872  # He et al.: 0.46 M
    assert a(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    pre = zoo.default_preprocessing("resnet32")
    assert pre.input_shape == [3, 32, 32] and pre.dataset == "cifar10"


def test_unknown_model_and_bad_options():
    with pytest.raises(AcompileError, match="unknown model"):
        zoo.build("vgg99")
    with pytest.raises(AcompileError):
        zoo.build("mlp", activation="tanh")
    with pytest.raises(AcompileError):
        zoo.build("resnet32", bogus=1)
