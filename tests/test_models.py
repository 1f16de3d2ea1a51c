"""Backbones at their native input size, the head's layer order, pooling and the masked multi-label loss."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d

from melanoma_lit.errors import ConfigError
from melanoma_lit.models.backbone import create_backbone, preprocessing_for
from melanoma_lit.models.head import GeM, LesionHead, LesionNet
from melanoma_lit.models.losses import MaskedBCEWithLogits

NUM_CLASSES = 8
INCEPTION = ("inception_v3", "inception_resnet_v2")


def lesion_net(name: str, **head_kwargs) -> LesionNet:
    backbone = create_backbone(name, pretrained=False)
    return LesionNet(backbone, LesionHead(backbone.num_features, NUM_CLASSES, **head_kwargs))


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "inception_v3",
        pytest.param("resnet152", marks=pytest.mark.slow),
        pytest.param("densenet201", marks=pytest.mark.slow),
        pytest.param("inception_resnet_v2", marks=pytest.mark.slow),
    ],
)
def test_backbone_trains_at_native_size(name: str) -> None:
    torch.manual_seed(0)
    prep = preprocessing_for(name)
    side = 299 if name in INCEPTION else 224
    assert prep.input_size == (side, side)
    assert prep.mean == ((0.5,) * 3 if name in INCEPTION else timm.data.IMAGENET_DEFAULT_MEAN)
    assert prep.std == ((0.5,) * 3 if name in INCEPTION else timm.data.IMAGENET_DEFAULT_STD)

    net = lesion_net(name).train()
    logits = net(torch.randn(2, 3, *prep.input_size))
    assert logits.shape == (2, NUM_CLASSES)
    logits.sum().backward()
    first_conv = next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0

    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, *prep.input_size)).isfinite().all()


def test_preprocessing_input_size_override() -> None:
    assert preprocessing_for("inception_v3", input_size=384).input_size == (384, 384)


def test_head_is_pool_bn_relu_dropout_linear() -> None:
    head = LesionHead(16, NUM_CLASSES, pool="avg", dropout=0.25)
    kinds = [type(m) for m in (head.pool, *head.layers)]
    assert kinds == [SelectAdaptivePool2d, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert head.layers[2].p == 0.25
    assert (head.layers[0].num_features, head.layers[-1].in_features) == (16, 16)
    assert head.layers[-1].out_features == NUM_CLASSES


def test_head_with_hidden_layer() -> None:
    head = LesionHead(16, NUM_CLASSES, pool="gem", hidden_dim=32)
    kinds = [type(m) for m in (head.pool, *head.layers)]
    assert kinds == [
        GeM,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    assert (head.layers[3].in_features, head.layers[3].out_features) == (16, 32)
    assert head(torch.rand(4, 16, 3, 3)).shape == (4, NUM_CLASSES)


def test_catavgmax_doubles_features_and_bad_pool_is_config_error() -> None:
    head = LesionHead(16, NUM_CLASSES, pool="catavgmax")
    assert head.layers[0].num_features == 32
    assert head(torch.rand(4, 16, 3, 3)).shape == (4, NUM_CLASSES)
    with pytest.raises(ConfigError, match="gem"):
        LesionHead(16, NUM_CLASSES, pool="median")


def test_gem_with_p_one_is_average_pooling_and_grows_towards_max() -> None:
    features = torch.rand(2, 5, 4, 4) + 0.01
    average = F.adaptive_avg_pool2d(features, 1).flatten(1)
    torch.testing.assert_close(GeM(p=1.0)(features), average)
    high = GeM(p=50.0)(features)
    assert (high > average).all()
    assert (high <= features.amax(dim=(2, 3)) + 1e-5).all()


def test_masked_entries_get_exactly_zero_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, NUM_CLASSES, requires_grad=True)
    targets = torch.randint(0, 2, (6, NUM_CLASSES)).float()
    known = torch.rand(6, NUM_CLASSES) > 0.4
    targets[~known] = float("nan")  # whatever a masked entry holds must not matter
    for loss_fn in (MaskedBCEWithLogits(), MaskedBCEWithLogits(focal_gamma=0.5, label_smoothing=0.1)):
        logits.grad = None
        loss = loss_fn(logits, targets, known.float())
        loss.backward()
        assert torch.isfinite(loss)
        assert (logits.grad[~known] == 0).all()
        assert (logits.grad[known] != 0).all()
    plain = MaskedBCEWithLogits()(logits, targets, known)
    expected = F.binary_cross_entropy_with_logits(logits[known], targets[known])
    torch.testing.assert_close(plain, expected)


def test_unmasked_loss_equals_torch_bce() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(5, NUM_CLASSES), torch.randint(0, 2, (5, NUM_CLASSES)).float()
    everything = torch.ones_like(targets)
    torch.testing.assert_close(
        MaskedBCEWithLogits()(logits, targets, everything), F.binary_cross_entropy_with_logits(logits, targets)
    )
    assert MaskedBCEWithLogits()(logits, targets, torch.zeros_like(targets)) == 0


def test_pos_weight_scales_positive_terms_only() -> None:
    logits = torch.randn(4, 3)
    known = torch.ones(4, 3)
    weight = torch.tensor([2.0, 3.0, 5.0])
    positives, negatives = torch.ones(4, 3), torch.zeros(4, 3)
    weighted = MaskedBCEWithLogits(pos_weight=weight)
    plain_terms = F.binary_cross_entropy_with_logits(logits, positives, reduction="none")
    torch.testing.assert_close(weighted(logits, positives, known), (plain_terms * weight).mean())
    torch.testing.assert_close(weighted(logits, negatives, known), MaskedBCEWithLogits()(logits, negatives, known))


def test_focal_gamma_zero_is_plain_and_positive_gamma_down_weights_easy_entries() -> None:
    logits = torch.tensor([[4.0, -0.2, -3.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    known = torch.ones_like(targets)
    plain = MaskedBCEWithLogits()
    torch.testing.assert_close(
        MaskedBCEWithLogits(focal_gamma=0)(logits, targets, known), plain(logits, targets, known)
    )
    p_true = torch.sigmoid(logits) * targets + (1 - torch.sigmoid(logits)) * (1 - targets)
    for i in range(3):
        entry = (logits[:, i : i + 1], targets[:, i : i + 1], known[:, i : i + 1])
        ratio = MaskedBCEWithLogits(focal_gamma=2.0)(*entry) / plain(*entry)
        torch.testing.assert_close(ratio, (1 - p_true[0, i]) ** 2)


def test_label_smoothing_moves_targets_towards_half() -> None:
    smoothing = 0.2
    loss_fn = MaskedBCEWithLogits(label_smoothing=smoothing)
    targets, known = torch.tensor([[1.0, 0.0]]), torch.ones(1, 2)
    soft = torch.tensor([[0.9, 0.1]])
    logits = torch.randn(1, 2)
    torch.testing.assert_close(loss_fn(logits, targets, known), F.binary_cross_entropy_with_logits(logits, soft))
    optimum = torch.logit(soft)
    assert loss_fn(optimum, targets, known) < loss_fn(optimum * 3, targets, known)


@pytest.mark.parametrize(("typo", "suggestion"), [("resnet_18", "resnet18"), ("densnet201", "densenet201")])
def test_unknown_backbone_suggests_close_names(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"Did you mean:.*\\b{suggestion}\\b"):
        create_backbone(typo)
    with pytest.raises(ConfigError, match=typo):
        preprocessing_for(typo)


def test_pretrained_without_network_explains_the_offline_options(monkeypatch, tmp_path) -> None:
    # huggingface_hub reads its settings at import: patch the live constants as well as the environment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError) as caught:
        create_backbone("resnet18", pretrained=True)
    message = str(caught.value)
    assert "backbone.pretrained=false" in message
    assert "backbone.checkpoint_path" in message


def test_checkpoint_path_loads_local_weights(tmp_path) -> None:
    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        source.layer4[1].bn2.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    loaded = create_backbone("resnet18", checkpoint_path=str(path))
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert loaded.state_dict().keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_path_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        create_backbone("resnet18", checkpoint_path=str(tmp_path / "missing.pth"))
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(ConfigError, match=r"cannot load it into 'test_efficientnet'"):
        create_backbone("test_efficientnet", checkpoint_path=str(path))
