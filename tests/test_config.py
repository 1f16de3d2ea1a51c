"""The real conf/ tree composes: every option of every group, the CLI's help, and clear errors for typos."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from melanoma_lit.callbacks.backbone_freeze import BackboneFreeze
from melanoma_lit.cli import split_command_line, unknown_key_hint
from melanoma_lit.train import instantiate_all
from tests.conftest import CONF_DIR, REPO_ROOT

GROUPS = ["backbone", "data", "augment", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"]
NON_SELECTABLE = {"base"}  # shared parents that other options extend


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem not in NON_SELECTABLE)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_resolves(compose_train, group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    OmegaConf.resolve(cfg)
    assert cfg[group] is not None


@pytest.mark.parametrize("preset", [p.stem for p in (CONF_DIR / "debug").glob("*.yaml")])
def test_debug_presets_and_experiments_compose(compose_config, preset: str) -> None:
    command = "bench" if preset.startswith("bench_") else "train"  # bench presets shrink the bench's own knobs
    cfg = compose_config(command, f"debug={preset}")
    assert cfg.task_name == ("bench" if command == "bench" else "debug")
    assert cfg.backbone.pretrained is False  # debug/default.yaml, shared by every preset: no weights download
    assert compose_config("train", "experiment=demo").task_name == "demo"


def test_backbones_set_their_timm_name_and_start_pretrained_on_real_data(compose_train) -> None:
    cfg = compose_train("backbone=inception_resnet_v2")
    assert cfg.backbone.name == "inception_resnet_v2"
    assert cfg.backbone.pretrained is False  # synthetic data trains from scratch
    assert "pretrained" not in cfg.data  # the backbone group owns the key
    for data in ("isic2017", "isic2018", "isic2019", "isic_merged", "folder"):
        assert compose_train("backbone=densenet201", f"data={data}").backbone.pretrained is True, data
    assert compose_train("experiment=isic2018_task3").backbone.pretrained is True
    assert compose_train("experiment=demo").backbone.pretrained is False
    assert compose_train("backbone.pretrained=true").backbone.pretrained is True  # the command line wins
    assert compose_train("data=isic2018", "debug=limit").backbone.pretrained is False


def test_backbone_freezing_is_a_callback_of_the_callbacks_group(compose_train) -> None:
    (default,) = [c for c in instantiate_all(compose_train().callbacks) if isinstance(c, BackboneFreeze)]
    assert default.unfreeze_at_epoch == 0  # never frozen unless asked
    cfg = compose_train("callbacks.backbone_freeze.unfreeze_at_epoch=2", "optimizer=sgd")
    (frozen,) = [c for c in instantiate_all(cfg.callbacks) if isinstance(c, BackboneFreeze)]
    assert frozen.unfreeze_at_epoch == 2
    assert set(cfg.optimizer) == {"name", "lr", "weight_decay", "layer_decay", "momentum"}  # build_optimizer's own


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "melanoma_lit.train", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_help_lists_the_groups() -> None:
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    for group in ("backbone", "data", "optimizer", "debug", "experiment"):
        assert f"{group}:" in result.stdout


def test_cfg_job_prints_the_composed_config() -> None:
    result = _cli("backbone=densenet201", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "name: densenet201" in result.stdout


def test_unknown_backbone_names_the_valid_choices() -> None:
    result = _cli("backbone=resnet_152", "--cfg", "job")
    assert result.returncode != 0
    assert "Could not find 'backbone/resnet_152'" in result.stderr
    assert "resnet152" in result.stderr and "densenet201" in result.stderr
    assert len(result.stderr.splitlines()) < 20


def test_typo_in_a_key_is_rejected_briefly_with_the_keys_that_exist() -> None:
    result = _cli("optimizer.learning_rat=0.1", "--cfg", "job")
    assert result.returncode != 0
    assert "Unknown key optimizer.learning_rat:" in result.stderr
    assert "optimizer has: name, lr, weight_decay" in result.stderr
    assert len(result.stderr.splitlines()) < 20


def test_key_hints_follow_the_chosen_groups_and_suggest_close_names() -> None:
    hint = unknown_key_hint("train", ["experiment=isic2018_task3", "model.loss.pos_weigt=true", "data.fold=1"])
    assert hint is not None and hint.startswith("Unknown key model.loss.pos_weigt: did you mean model.loss.pos_weight?")
    assert len(hint.splitlines()) == 1  # data.fold exists: no hint for it
    assert unknown_key_hint("train", ["backbone=resnet152", "optimizer.lr=0.1", "+extra.key=1"]) is None
    assert unknown_key_hint("train", ["backbone=resnet152,resnet18", "optimizer.lrr=0.1"]) is None  # a sweep


def test_key_hints_read_past_hydras_flags_and_their_values() -> None:
    for flags in (["--cfg", "job"], ["-c", "job", "--resolve"], ["--cfg=job", "-p", "optimizer"], ["-cn", "train"]):
        hint = unknown_key_hint("train", [*flags, "optimizer.lrr=0.1"])
        assert hint is not None and hint.startswith("Unknown key optimizer.lrr: did you mean optimizer.lr?"), flags
    assert split_command_line(["-m", "--cfg", "job", "a.b=1", "--info", "c=2", "-i", "defaults", "d=3"]) == (
        ["a.b=1", "c=2", "d=3"],
        {"--cfg": "job", "--info": "defaults"},
    )
    assert split_command_line(["-cn", "evaluate", "--config-dir=/x", "-h"]) == (
        [],
        {"--config-name": "evaluate", "--config-dir": "/x"},
    )
    assert unknown_key_hint("train", ["-cd", "/elsewhere", "optimizer.lrr=0.1"]) is None  # not our configs


def test_default_precision_is_bf16_on_a_cuda_gpu_and_full_on_cpu(compose_train, monkeypatch) -> None:
    import torch

    assert OmegaConf.to_container(compose_train().trainer, resolve=True)["precision"] == "32-true"  # no GPU here
    assert compose_train("trainer=gpu").trainer.precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # this machine has no GPU to ask
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert OmegaConf.to_container(compose_train().trainer, resolve=True)["precision"] == "bf16-mixed"
    assert OmegaConf.to_container(compose_train("trainer=cpu").trainer, resolve=True)["precision"] == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert OmegaConf.to_container(compose_train().trainer, resolve=True)["precision"] == "16-mixed"
