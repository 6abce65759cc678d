"""FeatImpute: fusion, imputation of absent modalities from shared features, auxiliary losses."""
import pytest
import torch
import torch.nn.functional as F

from hamfast.models import FeatImpute, FeatImputeFeatures

WIDTHS = (4, 8, 8, 8)
AVAILABLE = torch.tensor([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)


def _model_and_batch():
    torch.manual_seed(0)
    model = FeatImpute(widths=WIDTHS, shared_input="per-modality").eval()
    x = torch.rand(3, 4, 96, 96, generator=torch.Generator().manual_seed(1))
    return model, x


def test_features_encode_each_present_modality_alone_and_impute_absent_ones():
    model, x = _model_and_batch()
    with torch.no_grad():
        f = model.encode(x, AVAILABLE)
        # sample 1, modality 3 (flair): shared and specific encoders on that channel alone
        single = x[1:2, 3:4]
        torch.testing.assert_close(f.shared[1, 3], model.shared(single)[0])
        torch.testing.assert_close(f.specific[1, 3], model.specific[3](single)[0])
        fused = f.shared[1, 3] + model.fusion(torch.cat([f.shared[1, 3], f.specific[1, 3]]))
        torch.testing.assert_close(f.fused[1, 3], fused)
        # absent modalities: zero features, fused imputed with the first available one's shared feature
        assert torch.all(f.shared[1, [0, 2]] == 0) and torch.all(f.specific[2, [0, 1, 3]] == 0)
        for m in (0, 2):
            torch.testing.assert_close(f.fused[1, m], f.shared[1, 1])  # first available of sample 1: t1ce
        for m in (0, 1, 3):
            torch.testing.assert_close(f.fused[2, m], f.shared[2, 2])
        torch.testing.assert_close(model.classify(f), model.classifier(f.fused.flatten(1)))


def test_absent_channels_do_not_matter():
    model, x = _model_and_batch()
    noisy = x.clone()
    noisy[1, [0, 2]] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, AVAILABLE), model(x, AVAILABLE))


def test_auxiliary_loss_by_hand():
    model, _ = _model_and_batch()
    shared = torch.zeros(2, 4, 8)
    shared[0, 0], shared[0, 1], shared[0, 2] = 1.0, 3.0, 0.0  # pairs (0,1): 2, (0,2): 1, (1,2): 3
    shared[1, 3] = 7.0  # a single modality: no pair
    specific = torch.randn(2, 4, 8)
    available = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    f = FeatImputeFeatures(shared, specific, shared, available)
    consistency = (2 + 1 + 3) / 3
    rows = specific[[0, 0, 0, 1], [0, 1, 2, 3]]
    domain = F.cross_entropy(model.domain_classifier(rows), torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(model.auxiliary_loss(f), 0.1 * consistency + 0.02 * domain)


def test_sample_without_modality_raises():
    model, x = _model_and_batch()
    available = AVAILABLE.clone()
    available[2] = False
    with pytest.raises(ValueError, match="row 2 has no modality"):
        model(x, available)


def test_gradients_reach_every_part_in_training():
    model, x = _model_and_batch()
    model.train()
    f = model.encode(x, AVAILABLE)
    loss = F.cross_entropy(model.classify(f), torch.tensor([0, 1, 2])) + model.auxiliary_loss(f)
    loss.backward()
    for name in ("shared", "specific.0", "specific.3", "fusion", "classifier", "domain_classifier"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name + ".")]
        assert grads and all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_stacked_shared_encoder_reads_every_present_modality_at_once():
    torch.manual_seed(0)
    model = FeatImpute(widths=WIDTHS).eval()  # the default: the paper's "shared encoder on stacked inputs"
    assert model.shared_input == "stacked" and model.shared.blocks[0][0].in_channels == 4
    x = torch.rand(3, 4, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = model.encode(x, AVAILABLE)
        stacked = model.shared(x * AVAILABLE[:, :, None, None])  # [3, C]: absent channels zero
        for b, row in enumerate(AVAILABLE):
            for m in range(4):
                expected = stacked[b] if row[m] else torch.zeros_like(stacked[b])
                torch.testing.assert_close(f.shared[b, m], expected)
            first = int(row.long().argmax())
            for m in (~row).nonzero()[:, 0].tolist():
                torch.testing.assert_close(f.fused[b, m], stacked[b])  # imputed with the sample's shared feature
        assert model.auxiliary_loss(f) == pytest.approx(0.02 * F.cross_entropy(
            model.domain_classifier(f.specific[AVAILABLE]), AVAILABLE.nonzero()[:, 1]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="shared_input"):
        FeatImpute(widths=WIDTHS, shared_input="both")
