"""Train the head alone for the first epochs, then the whole net: a Lightning callback."""

from __future__ import annotations

import pytorch_lightning as pl
import torch.nn as nn

from melanoma_lit.errors import ConfigError


class BackboneFreeze(pl.Callback):
    """Train only the head for the first ``unfreeze_at_epoch`` epochs, then the whole net.

    The frozen backbone is a fixed feature extractor: no gradients and eval mode (BatchNorm running statistics
    and dropout untouched). The optimizer must already hold the backbone's parameters (build it with
    :func:`build_optimizer`): a parameter without gradient is skipped by torch optimisers, weight decay included,
    so after unfreezing each group trains at exactly its :func:`param_groups` rate (times the schedule).
    Plain ``BaseFinetuning`` is not used because its resume logic restores param groups with stale lrs.
    """

    def __init__(self, unfreeze_at_epoch: int) -> None:
        if unfreeze_at_epoch < 0:
            raise ConfigError(f"unfreeze_at_epoch={unfreeze_at_epoch}: use 0 (never frozen) or a positive epoch")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self._frozen: list[nn.Parameter] = []

    @staticmethod
    def _backbone(pl_module: pl.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        if not isinstance(getattr(net, "backbone", None), nn.Module):
            raise ConfigError(f"BackboneFreeze needs a LightningModule with .net.backbone; {type(pl_module)} has none")
        return net.backbone

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        in_optimizer = {id(p) for optimizer in trainer.optimizers for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, p in self._backbone(pl_module).named_parameters() if id(p) not in in_optimizer]
        if missing:
            raise ConfigError(
                f"BackboneFreeze: {len(missing)} backbone parameters (e.g. {missing[0]}) are not in the optimizer; "
                "build it with melanoma_lit.models.optim.build_optimizer so unfreezing trains them"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        backbone = self._backbone(pl_module)
        if trainer.current_epoch < self.unfreeze_at_epoch:
            if not self._frozen:
                self._frozen = [p for p in backbone.parameters() if p.requires_grad]
                for param in self._frozen:
                    param.requires_grad_(False)
                    param.grad = None
            backbone.eval()
        else:
            self._release(backbone)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Leave the net trainable if training stopped while still frozen."""
        self._release(self._backbone(pl_module))

    def _release(self, backbone: nn.Module) -> None:
        if not self._frozen:
            return
        for param in self._frozen:
            param.requires_grad_(True)
        self._frozen = []
        backbone.train()
