"""Discriminative learning rates, optimisers, schedulers and backbone freezing in a real (tiny) Lightning fit."""

from __future__ import annotations

import math
import re
from itertools import pairwise

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from melanoma_lit.callbacks.backbone_freeze import BackboneFreeze
from melanoma_lit.errors import ConfigError
from melanoma_lit.models.backbone import create_backbone
from melanoma_lit.models.head import LesionHead, LesionNet
from melanoma_lit.models.losses import MaskedBCEWithLogits
from melanoma_lit.models.optim import build_optimizer, build_scheduler, param_groups

LR, DECAY = 1e-3, 0.05
NUM_CLASSES = 3


def lesion_net(name: str, pool: str = "avg") -> LesionNet:
    torch.manual_seed(0)
    backbone = create_backbone(name, pretrained=False)
    return LesionNet(backbone, LesionHead(backbone.num_features, NUM_CLASSES, pool=pool, hidden_dim=8))


def layer_index(group: dict) -> int:
    return int(re.match(r"backbone\.layer(\d+)\.", group["name"]).group(1))


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("resnet18", 5),  # stem + layer1..4
        ("densenet201", 6),  # stem + 4 dense blocks (each with its transition) + final norm
        ("inception_v3", 13),
        ("inception_resnet_v2", 45),
        ("test_vit", 7),  # generic timm model with its own no_weight_decay() list
        ("pit_ti_224", 4),  # generic timm model without group_matcher(): timm's fallback grouping
    ],
)
def test_param_groups_decay_towards_the_stem(name: str, stages: int) -> None:
    net = lesion_net(name, pool="gem")
    groups = param_groups(net, LR, DECAY, layer_decay=0.8)

    head = [g for g in groups if g["name"].startswith("head.")]
    assert {g["name"] for g in head} == {"head.decay", "head.no_decay"}
    assert all(g["lr"] == LR and g["lr_ratio"] == 1.0 for g in head)

    by_layer: dict[int, set[float]] = {}
    for group in groups:
        if group not in head:
            by_layer.setdefault(layer_index(group), set()).add(group["lr"])
            assert group["lr"] == pytest.approx(LR * group["lr_ratio"])
    assert all(len(rates) == 1 for rates in by_layer.values())
    rates = [by_layer[i].pop() for i in sorted(by_layer)]
    assert len(rates) >= stages if name == "pit_ti_224" else len(rates) == stages
    assert all(lower < higher for lower, higher in pairwise(rates))
    assert rates[-1] == pytest.approx(LR * 0.8)
    assert rates[0] == pytest.approx(LR * 0.8 ** len(rates))
    assert len({g["name"] for g in groups}) == len(groups)

    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in net.parameters()}

    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    norms = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm)
    model_no_decay = {f"backbone.{n}" for n in getattr(net.backbone, "no_weight_decay", set)()}
    for module_name, module in net.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            no_decay = isinstance(module, norms) or param_name == "bias" or param.ndim <= 1
            no_decay = no_decay or f"{module_name}.{param_name}" in model_no_decay
            assert decay_of[id(param)] == (0.0 if no_decay else DECAY), f"{module_name}.{param_name}"
    if name == "test_vit":
        assert {"backbone.pos_embed", "backbone.cls_token"} <= model_no_decay


def test_layer_decay_one_gives_every_parameter_the_same_rate() -> None:
    groups = param_groups(lesion_net("resnet18"), LR, DECAY, layer_decay=1.0)
    assert {g["lr"] for g in groups} == {LR}
    assert {g["weight_decay"] for g in groups} == {0.0, DECAY}


@pytest.mark.parametrize(("lr", "layer_decay"), [(0.0, 0.5), (1e-3, 0.0), (1e-3, 1.5)])
def test_param_groups_reject_bad_rates(lr: float, layer_decay: float) -> None:
    with pytest.raises(ConfigError):
        param_groups(lesion_net("test_resnet"), lr, DECAY, layer_decay)


def test_build_optimizer_kinds() -> None:
    net = lesion_net("test_resnet")
    expected = [g["lr"] for g in param_groups(net, LR, DECAY, 0.7)]
    adam = build_optimizer(net, "Adam", LR, DECAY, layer_decay=0.7, betas=(0.8, 0.99))
    adamw = build_optimizer(net, "adamw", LR, DECAY, layer_decay=0.7)
    sgd = build_optimizer(net, "sgd", LR, DECAY, layer_decay=0.7, momentum=0.95)
    assert (type(adam), type(adamw), type(sgd)) == (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
    for optimizer in (adam, adamw, sgd):
        assert [g["lr"] for g in optimizer.param_groups] == expected
    assert adam.param_groups[0]["betas"] == (0.8, 0.99)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.95
    with pytest.raises(ConfigError, match="adam, adamw, sgd"):
        build_optimizer(net, "lamb", LR, DECAY)


def two_group_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [{"params": [nn.Parameter(torch.zeros(2))], "lr": 1.0}, {"params": [nn.Parameter(torch.zeros(2))], "lr": 0.25}],
        lr=1.0,
    )


def lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]


def test_cosine_warms_up_linearly_then_decays_to_the_floor() -> None:
    optimizer = two_group_optimizer()
    config = build_scheduler(optimizer, "cosine", total_steps=10, warmup_steps=2, min_lr=0.1)
    assert config["interval"] == "step"
    floor = 0.1  # min_lr relative to the largest group's rate (1.0)
    expected = {
        0: 0.5,
        1: 1.0,
        2: 1.0,
        6: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)),
        10: floor,
    }
    seen = {}
    for step in range(11):
        seen[step] = lrs(optimizer)
        optimizer.step()
        config["scheduler"].step()
    for step, factor in expected.items():
        assert seen[step] == pytest.approx([factor, 0.25 * factor]), step


def test_plateau_halves_every_group_after_patience_on_a_flat_metric() -> None:
    optimizer = two_group_optimizer()
    config = build_scheduler(optimizer, "plateau", monitor="val/auc", patience=2, factor=0.5, min_lr=0.3)
    assert (config["monitor"], config["interval"]) == ("val/auc", "epoch")
    history = []
    for _ in range(8):
        config["scheduler"].step(0.7)
        history.append(lrs(optimizer))
    assert history[:3] == [[1.0, 0.25]] * 3
    assert history[3] == [0.5, 0.125]
    assert history[-1] == pytest.approx([0.3, 0.075])  # the floor keeps the 4:1 ratio


def test_onecycle_peaks_each_group_at_its_own_rate() -> None:
    optimizer = two_group_optimizer()
    config = build_scheduler(optimizer, "onecycle", total_steps=20, warmup_steps=5)
    assert config["interval"] == "step"
    history = []
    for _ in range(20):
        history.append(lrs(optimizer))
        optimizer.step()
        config["scheduler"].step()
    assert history[4] == pytest.approx([1.0, 0.25])  # peak on the last warm-up step, as cosine
    assert all(high == pytest.approx(4 * low) for high, low in history)
    assert history[0][0] < 0.1 and history[-1][0] < 1e-3


def test_scheduler_choices_and_errors() -> None:
    assert build_scheduler(two_group_optimizer(), None) is None
    assert build_scheduler(two_group_optimizer(), "none") is None
    with pytest.raises(ConfigError, match="plateau, cosine, onecycle"):
        build_scheduler(two_group_optimizer(), "step")
    with pytest.raises(ConfigError, match="total_steps"):
        build_scheduler(two_group_optimizer(), "cosine")
    with pytest.raises(ConfigError, match="warmup_steps"):
        build_scheduler(two_group_optimizer(), "onecycle", total_steps=5, warmup_steps=5)
    with pytest.raises(ConfigError, match="monitor"):
        build_scheduler(two_group_optimizer(), "plateau")


class TinyModule(pl.LightningModule):
    """The minimum the freeze callback needs: a LesionNet at ``.net`` and build_optimizer's groups."""

    def __init__(self, net: LesionNet, head_only_optimizer: bool = False) -> None:
        super().__init__()
        self.net = net
        self.loss = MaskedBCEWithLogits()
        self.head_only_optimizer = head_only_optimizer
        self.backbone_training: dict[int, set[bool]] = {}
        self.epoch_lrs: dict[int, list[float]] = {}
        self.snapshots: list[dict[str, torch.Tensor]] = [self.snapshot()]

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items() if v.is_floating_point()}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.backbone_training.setdefault(self.current_epoch, set()).add(self.net.backbone.training)
        images, targets = batch
        return self.loss(self.net(images), targets, torch.ones_like(targets))

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        self.log("val/loss", self.loss(self.net(images), targets, torch.ones_like(targets)))

    def on_train_epoch_start(self) -> None:
        self.epoch_lrs[self.current_epoch] = lrs(self.optimizers().optimizer)

    def on_train_epoch_end(self) -> None:
        self.snapshots.append(self.snapshot())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.head_only_optimizer:
            return torch.optim.AdamW(self.net.head.parameters(), lr=1e-2)
        return build_optimizer(self.net, "adamw", lr=1e-2, weight_decay=0.1, layer_decay=0.5)


def tiny_fit(module: TinyModule, callback: BackboneFreeze, epochs: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 32, 32, generator=generator)
    targets = (torch.rand(16, NUM_CLASSES, generator=generator) > 0.5).float()
    loader = DataLoader(TensorDataset(images, targets), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        val_check_interval=0.5,  # validation mid-epoch must not switch the frozen backbone back to train mode
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(module, loader, loader)


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_backbone_freeze_trains_only_the_head_until_unfreeze() -> None:
    pl.seed_everything(0, verbose=False)
    module = TinyModule(lesion_net("test_resnet"))
    tiny_fit(module, BackboneFreeze(unfreeze_at_epoch=2))

    start, epoch0, epoch1, epoch2 = module.snapshots
    backbone_keys = {k for k in start if k.startswith("backbone.")}
    assert changed(start, epoch0, "backbone.") == set()  # weights and BatchNorm running statistics
    assert changed(epoch0, epoch1, "backbone.") == set()
    assert changed(epoch1, epoch2, "backbone.") == backbone_keys
    for before, after in pairwise(module.snapshots):
        assert changed(before, after, "head.layers.") == {k for k in start if k.startswith("head.layers.")}

    assert module.backbone_training == {0: {False}, 1: {False}, 2: {True}}
    expected = [g["lr"] for g in param_groups(module.net, 1e-2, 0.1, layer_decay=0.5)]
    assert module.epoch_lrs == {0: expected, 1: expected, 2: expected}
    assert all(p.requires_grad for p in module.net.parameters())


def test_backbone_freeze_restores_a_net_stopped_while_frozen() -> None:
    module = TinyModule(lesion_net("test_resnet"))
    tiny_fit(module, BackboneFreeze(unfreeze_at_epoch=5), epochs=1)
    assert changed(module.snapshots[0], module.snapshots[1], "backbone.") == set()
    assert module.net.backbone.training and all(p.requires_grad for p in module.net.parameters())


def test_backbone_freeze_needs_the_backbone_in_the_optimizer() -> None:
    with pytest.raises(ConfigError, match="build_optimizer"):
        tiny_fit(TinyModule(lesion_net("test_resnet"), head_only_optimizer=True), BackboneFreeze(1), epochs=1)
    with pytest.raises(ConfigError, match="unfreeze_at_epoch"):
        BackboneFreeze(-1)
