import pytest
import torch

from fedlab_widgets import CNN, SmallCNN, TwoNN, count_parameters, get_model


@pytest.mark.parametrize("name,cls,params", [("2nn", TwoNN, 199_210), ("cnn", CNN, 1_663_370),
                                             ("small_cnn", SmallCNN, 54_314)])
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
    with pytest.raises(ValueError, match="2nn, cnn, small_cnn"):
        get_model("resnet")
