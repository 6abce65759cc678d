"""CBRTiny: the paper's parameter count, input-size checks, masking of absent channels."""
import pytest
import torch

from hamfast.models import CBRTiny, build_model, min_input_size

NARROW = (4, 8, 8, 8)


def test_full_width_parameter_count_matches_the_paper():
    # conv 4->64, 64->128, 128->256, 256->512 (5x5, with bias) + 4 BN affine + Linear(512, 3)
    with torch.device("meta"):
        model = CBRTiny(in_channels=4, num_classes=3, widths=(64, 128, 256, 512), kernel_size=5)
    assert sum(p.numel() for p in model.parameters()) == 4_311_619


def test_block_structure():
    model = CBRTiny(widths=NARROW)
    block = model.trunk.blocks[0]
    conv, bn, _, pool = block
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 5), (1, 1), (0, 0))
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert (pool.kernel_size, pool.stride) == (3, 2)
    assert model.head.in_features == NARROW[-1]


def test_min_input_size_and_clear_error():
    # 91 -conv-> 87 -pool-> 43 -conv-> 39 -pool-> 19 -conv-> 15 -pool-> 7 -conv-> 3 -pool-> 1
    assert min_input_size(4, 5) == 91
    assert min_input_size(1, 3) == 5  # 5 -conv3-> 3 -pool-> 1
    model = CBRTiny(widths=NARROW).eval()
    assert model(torch.zeros(1, 4, 91, 91)).shape == (1, 3)
    with pytest.raises(ValueError, match="at least 91x91"):
        model(torch.zeros(1, 4, 90, 96))
    with pytest.raises(ValueError, match="in_channels=4"):
        model(torch.zeros(1, 3, 96, 96))


def test_absent_channels_are_zeroed_inside():
    torch.manual_seed(0)
    model = CBRTiny(widths=NARROW).eval()
    x = torch.rand(3, 4, 96, 96)
    available = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    masked = x * available[:, :, None, None]
    torch.testing.assert_close(model(x, available), model(masked))
    assert not torch.allclose(model(x, available), model(x))
    with pytest.raises(ValueError, match="available must be"):
        model(x, available[:2])


def test_build_model_methods():
    assert type(build_model("standard", widths=NARROW)) is CBRTiny
    assert type(build_model("dropout", widths=NARROW)) is CBRTiny
    assert type(build_model("featimpute", widths=NARROW)).__name__ == "FeatImpute"
    ham = build_model("ham", widths=NARROW, hidden=3, backend="reference")
    assert type(ham).__name__ == "HAM" and ham.hidden == 3 and ham.backend == "reference"
    with pytest.raises(ValueError, match="method must be one of"):
        build_model("moddrop")
