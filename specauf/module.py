"""The LightningModule: wires target features → drafter → head → loss, and logs. No math of its own."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from specauf.errors import ConfigError
from specauf.feature_cache import FeatureCache
from specauf.losses import (
    BaseAnchoredCurriculum,
    BlockLoss,
    Predictions,
    check_branches,
    data_parallel_weights,
)

log = logging.getLogger(__name__)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class DrafterModule(L.LightningModule):
    """Trains `drafter` against a frozen `target` under `loss`.

    The target is deliberately not a registered submodule: it is frozen, large, and must never end up in the
    drafter's checkpoints or optimizer. It follows the module's device at the start of each stage.
    """

    def __init__(
        self,
        drafter: torch.nn.Module,
        target: torch.nn.Module,
        loss: BlockLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_ratio: float = 0.04,
        min_lr_ratio: float = 0.0,
        info_losses: Mapping[str, BlockLoss] | None = None,
        run_config: dict[str, Any] | None = None,
        curriculum: BaseAnchoredCurriculum | None = None,
        cache_target_features: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(cache_target_features, bool):
            raise ConfigError(
                f"cache_target_features must be true or false, got {cache_target_features!r}. Fix: "
                "cache_target_features=true (one CPU process, a small dataset trained for several epochs) or false"
            )
        # Before any data is read or step is run: a loss on branches this drafter lacks would train plain CE.
        check_branches(loss, getattr(drafter, "branches", ("final",)), type(drafter).__name__)
        self.drafter = drafter
        object.__setattr__(self, "target", target)
        self.loss = loss
        self.curriculum = curriculum or BaseAnchoredCurriculum()
        self.optimizer_factory = optimizer
        self.warmup_ratio, self.min_lr_ratio = warmup_ratio, min_lr_ratio
        self.info_losses = dict(info_losses or {})
        self.run_config = run_config or {}
        self.val_metrics = torch.nn.ModuleDict()
        # Not state: never in a checkpoint, so a resumed run recomputes (specauf.feature_cache).
        self.feature_cache = FeatureCache() if cache_target_features else None

    # -- stages ---------------------------------------------------------------------------------------------
    def _place_target(self) -> None:
        self.target.to(self.device)

    def on_fit_start(self) -> None:
        self._place_target()
        if self.feature_cache is not None:
            self._check_feature_cache()

    def _check_feature_cache(self) -> None:
        where = "a GPU" if self.device.type != "cpu" else None
        if self.trainer.world_size > 1:
            where = f"{self.trainer.world_size} processes"
        if where:
            # A no-op, not an error: the CPU default turns it on, and the same command on a GPU or under
            # trainer=ddp must still run. There the target's forward is cheap next to holding its features
            # in host memory, a copy per process.
            log.warning("cache_target_features=true has no effect on %s: the target runs every step", where)
            self.feature_cache = None
            return
        data = getattr(self.trainer, "datamodule", None)
        sets = [getattr(data, name, None) for name in ("train_set", "val_set")]
        if all(s is not None for s in sets):
            self.feature_cache.check_room(sets, len(self.target.layer_ids) * self.target.hidden_size)

    def on_train_end(self) -> None:
        if self.feature_cache is not None:
            log.info(
                "feature cache: %d samples, %.2f GB", len(self.feature_cache), self.feature_cache.nbytes / 1e9
            )

    def on_validation_start(self) -> None:
        self._place_target()

    # -- the step -------------------------------------------------------------------------------------------
    def predictions(self, batch: dict[str, Tensor], split: str = "train") -> dict[str, Predictions]:
        with torch.no_grad():
            if self.feature_cache is None:
                features = self.target.features(batch["input_ids"], batch["attention_mask"])
            else:
                features = self.feature_cache.features(batch, self.target.features, split)
        return self.drafter.training_predictions(batch, features, self.target)

    def objective(self, preds: dict[str, Predictions]) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        return self.curriculum(self.loss, preds, self.progress)

    @property
    def progress(self) -> float:
        """Fraction of the run done, in [0, 1] (drives curricula such as Domino's λ)."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return min(1.0, self.global_step / total) if total and math.isfinite(total) else 0.0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        parallel = self._trainer is not None and self.trainer.world_size > 1
        # Under data parallelism the processes' losses average to the whole global batch's (see the context).
        weights = (
            data_parallel_weights(functools.partial(self.trainer.strategy.reduce, reduce_op="mean"))
            if parallel
            else nullcontext()
        )
        with weights:
            loss, metrics = self.objective(self.predictions(batch))
        n_blocks = int((batch["anchors"] >= 0).sum())
        self.log("train/loss", loss, prog_bar=True, batch_size=n_blocks, sync_dist=parallel)
        for name, (num, den) in metrics.items():
            self.log(f"train/{name}", num / den.clamp_min(1), prog_bar=name == "tf_tau", batch_size=n_blocks)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        preds = self.predictions(batch, split="val")
        loss, metrics = self.objective(preds)
        n_valid = preds["final"].valid.sum()
        self._val_update("loss", loss, n_valid)
        for name, (num, den) in metrics.items():
            self._val_update(name, num / den.clamp_min(1), den)
        # Losses we are not training on, as metrics: every run reports the same comparable numbers.
        for name, info_loss in self.info_losses.items():
            info, _ = info_loss(preds["final"])
            self._val_update(f"info/{name}", info, n_valid)

    def _val_update(self, name: str, value: Tensor, weight: Tensor) -> None:
        key = name.replace("/", "__")
        if key not in self.val_metrics:
            self.val_metrics[key] = MeanMetric().to(self.device)
        self.val_metrics[key].update(value.detach().float(), weight.float())

    def on_validation_epoch_end(self) -> None:
        for key, metric in self.val_metrics.items():
            if metric.update_count:
                self.log(f"val/{key.replace('__', '/')}", metric.compute(), prog_bar=key == "tf_tau")
            metric.reset()

    # -- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.drafter.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, round(self.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Under FSDP each process holds a shard of the gradients, so their norm needs the wrapper's own
        # clip_grad_norm_ (it all-reduces); Lightning's precision plugin refuses norm clipping there.
        fsdp_clip = getattr(self.trainer.model, "clip_grad_norm_", None)
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and fsdp_clip is not None:
            fsdp_clip(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What a checkpoint needs to be loaded without the training config: rebuild the drafter, and refuse
        # a target it was not trained for.
        checkpoint["specauf"] = {
            "drafter_class": f"{type(self.drafter).__module__}.{type(self.drafter).__qualname__}",
            "drafter_config": dict(self.drafter.config),
            "target_name": getattr(self.target, "name", None),
            "target_layer_ids": list(getattr(self.target, "layer_ids", [])),
            "target_hidden_size": getattr(self.target, "hidden_size", None),
            "target_vocab_size": getattr(self.target, "vocab_size", None),
            "target_num_layers": _num_layers(self.target),
            "target_revision": getattr(self.target, "revision", None),
            "target_chat_template_sha256": getattr(self.target, "chat_template_sha256", None),
            "serving_mask_token_id": getattr(self.target, "serving_mask_token_id", None),
            "config": self.run_config,
        }


def _num_layers(target: Any) -> int | None:
    config = getattr(target, "config", None)
    if config is None:
        return None
    return getattr(config.get_text_config(), "num_hidden_layers", None)
