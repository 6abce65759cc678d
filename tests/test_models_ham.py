"""HAM: each sample of a mixed batch gets exactly what its own pattern's task model gives it."""
import math

import pytest
import torch

from hamfast.models import HAM, CBRTiny
from hamfast.patterns import all_patterns, pattern_code

WIDTHS = (4, 8, 8, 8)

# t1+t2+flair twice, t1 alone once, all four 3 times, t1ce+t2 once; unsorted on purpose
AVAILABLE = torch.tensor(
    [[1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]],
    dtype=torch.bool,
)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(AVAILABLE.shape[0], 4, 96, 96, generator=gen)


def _make_ham(backend="fused", seed=0):
    torch.manual_seed(seed)
    ham = HAM(widths=WIDTHS, backend=backend)
    # Move the last layer's weight away from its small init so that patterns differ clearly.
    with torch.no_grad():
        ham.hypernet.out.weight.mul_(20)
    return ham


def _per_pattern_logits(ham, x):
    out = torch.empty(x.shape[0], ham.num_classes)
    for code in pattern_code(AVAILABLE).unique():
        idx = (pattern_code(AVAILABLE) == code).nonzero()[:, 0]
        mu = AVAILABLE[idx[0]]
        out[idx] = ham.task_model(mu)(x[idx] * mu[None, :, None, None])
    return out


def test_mixed_batch_equals_task_models_in_eval_mode():
    ham, x = _make_ham(), _batch()
    ham.train()
    for seed in (1, 2):  # give the patterns different running statistics
        ham(_batch(seed), AVAILABLE)
    ham.eval()
    with torch.no_grad():
        logits = ham(x, AVAILABLE)
        torch.testing.assert_close(logits, _per_pattern_logits(ham, x), rtol=1e-4, atol=1e-5)
    codes = pattern_code(AVAILABLE).unique()
    assert not torch.allclose(ham.norms[0].running_mean[codes[0]], ham.norms[0].running_mean[codes[1]])


def test_mixed_batch_equals_task_models_in_training_mode():
    ham, x = _make_ham(), _batch()
    ham.train()
    logits = ham(x, AVAILABLE)
    with torch.no_grad():
        expected = _per_pattern_logits(ham, x)  # task models in train mode: their group's batch stats
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-4, atol=1e-5)


def test_patterns_get_different_models():
    ham, x = _make_ham(), _batch()
    ham.eval()
    with torch.no_grad():
        a = ham(x[:1], AVAILABLE[:1])
        b = ham(x[:1], torch.tensor([[1, 1, 1, 0]]))  # flair dropped
        c = ham.task_model(torch.tensor([1, 1, 1, 0]))(x[:1] * torch.tensor([1.0, 1, 1, 0])[None, :, None, None])
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-5)


def test_reference_backend_gives_same_logits_and_gradients():
    fused = _make_ham("fused")
    reference = HAM(widths=WIDTHS, backend="reference")
    reference.load_state_dict(fused.state_dict())
    x = _batch()
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    results = []
    for model in (fused, reference):
        model.train()
        logits = model(x, AVAILABLE)
        loss = torch.nn.functional.cross_entropy(logits, target)
        model.zero_grad()
        loss.backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for name, grad in results[0][1].items():
        want = results[1][1][name]
        # float32 summation order differs between the backends; compare at the gradient's own scale
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()), msg=name)
    out = fused.hypernet.out
    assert out.weight.grad.abs().sum() > 0 and out.bias.grad.abs().sum() > 0
    assert sum(float(p.grad.abs().sum()) for p in fused.hypernet.body.parameters()) > 0


def test_conv_weights_are_generated_in_the_kernels_layout_with_unchanged_values():
    """The hypernetwork emits each conv weight Cin-fastest ([Cout, kh, kw, Cin] memory per pattern,
    what the CUDA kernels read and write), every tensor 32-byte aligned in its row, so the op reads
    the weights in place. The values are those of a hypernetwork initialised in PyTorch's parameter
    order with the same seed: only the memory layout moved; the padding outputs stay zero."""
    from hamfast.models.ham import ALIGN, HYPER_LAYERS, _template_layout, output_placement
    from hamfast.models.hypernet import HyperNetwork

    widths = (4, 6, 8, 8)  # conv biases of 4 and 6 put the next tensor off the alignment
    torch.manual_seed(3)
    ham = HAM(widths=widths, num_classes=5)
    torch.manual_seed(3)
    layout, base, spread = _template_layout(CBRTiny(4, 5, widths, 5))
    pytorch_order = HyperNetwork(4, base.numel(), hidden=4, num_layers=HYPER_LAYERS, base=base, spread=spread)
    placement, width = output_placement(layout)
    assert width % ALIGN == 0 and width > base.numel() and sorted(set(placement.tolist())) == sorted(placement.tolist())
    mu = all_patterns()
    with torch.no_grad():
        params = ham.generate(mu)
        flat = pytorch_order(mu.float())
        emitted = ham.hypernet(mu.float())
    sizes = [math.prod(shape) for _, shape in layout]
    for (name, shape), part in zip(layout, flat.split(sizes, dim=1)):
        got = params[name]
        assert torch.equal(got, part.reshape((15,) + shape)), name
        assert (got.data_ptr() - emitted.data_ptr()) % (4 * ALIGN) == 0, name  # starts 32-byte aligned
        if len(shape) == 4:
            assert got[0].permute(0, 2, 3, 1).is_contiguous() and got.stride(0) == width, name
    unused = torch.ones(width, dtype=torch.bool)
    unused[placement] = False
    assert not emitted[:, unused].any()
    # The gradient of a generated weight reaches the hypernetwork through views only.
    ham.zero_grad()
    generated = ham.generate(mu)["trunk.blocks.1.0.weight"]
    assert generated._base is not None
    (generated * torch.randn_like(generated)).sum().backward()
    assert ham.hypernet.out.weight.grad[placement].abs().sum() > 0
    assert not ham.hypernet.out.weight.grad[unused].any()


def test_generated_weights_start_at_default_init_scale():
    torch.manual_seed(0)
    ham = HAM(widths=(16, 32, 32, 64))
    with torch.no_grad():
        params = ham.generate(all_patterns())
    reference = CBRTiny(widths=(16, 32, 32, 64))
    for module_name, module in reference.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # scale starts at 1, shift at 0
            assert (params[f"{module_name}.weight"] - 1).abs().max() < 0.1, module_name
            assert params[f"{module_name}.bias"].abs().max() < 0.1, module_name
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            # PyTorch's default: weight and bias ~ U(-b, b), b = 1/sqrt(fan_in), std = b / sqrt(3)
            bound = 1 / math.sqrt(module.weight[0].numel())
            weight, bias = params[f"{module_name}.weight"], params[f"{module_name}.bias"]
            assert weight.shape == (15,) + module.weight.shape, module_name
            for g in range(15):
                assert 0.8 < weight[g].std() / (bound / math.sqrt(3)) < 1.25, (module_name, g)
            assert bias.abs().max() < 1.1 * bound, module_name
    # the patterns start close together but not identical
    assert not torch.equal(params["head.weight"][0], params["head.weight"][14])


def test_empty_pattern_raises():
    ham = _make_ham()
    available = AVAILABLE.clone()
    available[4] = False
    with pytest.raises(ValueError, match="row 4 has no modality"):
        ham(_batch(), available)
    with pytest.raises(ValueError, match="empty pattern"):
        ham.task_model(torch.zeros(4, dtype=torch.bool))


def test_task_model_accepts_pattern_code_and_is_standalone():
    ham = _make_ham().eval()
    by_code = ham.task_model(11)  # 0b1011: t1, t1ce, flair
    by_mu = ham.task_model(torch.tensor([True, True, False, True]))
    assert type(by_code) is CBRTiny and not by_code.training
    for (name, a), (_, b) in zip(by_code.state_dict().items(), by_mu.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert all(not p.requires_grad or p.grad is None for p in by_code.parameters())
    with pytest.raises(ValueError, match="mu must be a pattern"):
        ham.task_model(torch.ones(3))


def test_backend_is_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        HAM(widths=WIDTHS, backend="cuda")


def test_full_width_hypernetwork_generates_every_cbrtiny_parameter():
    with torch.device("meta"):
        ham = HAM()
    # 4_311_619 parameters, each tensor placed at a multiple of 8 outputs (hamfast.models.ham.ALIGN)
    assert ham.hypernet.out.out_features == 4_311_624
    assert [layer.out_features for layer in ham.hypernet.body if isinstance(layer, torch.nn.Linear)] == [4, 4, 4]
    assert ham.hypernet.body[0].in_features == 4
