import pytest
import torch

from fedlab_widgets import CNN, SmallCNN, TwoNN, count_parameters, get_model
from fedlab_widgets.models import LeNet, LogReg


@pytest.mark.parametrize("name,cls,params", [("2nn", TwoNN, 199_210), ("cnn", CNN, 1_663_370),
                                             ("small_cnn", SmallCNN, 54_314),
                                             ("logreg", LogReg, 7_850), ("lenet", LeNet, 13_426)])
def test_exact_parameter_counts_and_output_shape(name, cls, params):
    m = get_model(name)
    assert isinstance(m, cls)
    assert count_parameters(m) == params
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_small_cnn_is_much_cheaper_than_cnn():
    assert count_parameters(get_model("small_cnn")) * 20 < count_parameters(get_model("cnn"))


def test_seed_gives_same_weights():
    a, b, c = get_model("2nn", seed=1), get_model("2nn", seed=1), get_model("2nn", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="2nn, cnn, small_cnn, logreg, lenet"):
        get_model("resnet")


@pytest.mark.parametrize("name", ["cnn", "small_cnn"])
def test_channels_last_weights_compute_what_the_default_layout_computes(name):
    # the CNNs keep their conv weights channels-last for speed; the reference is the
    # same weights in PyTorch's default layout, in float64 so only rounding can differ
    fast = get_model(name, seed=3).double()
    ref = get_model(name, seed=3).double().to(memory_format=torch.contiguous_format)
    assert not ref.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.conv2.weight.is_contiguous(memory_format=torch.channels_last) == (
        torch.backends.mkldnn.is_available())
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(16) % 10
    outs, grads = [], []
    for m in (fast, ref):
        out = m(x)
        grads.append(torch.autograd.grad(torch.nn.functional.cross_entropy(out, y),
                                         list(m.parameters())))
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for g, h in zip(*grads):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)
