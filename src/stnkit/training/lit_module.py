"""``STNLitModule``: any model of :mod:`stnkit.models` trained as a classifier with Lightning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from stnkit import models
from stnkit.modules import SpatialTransformer, param_groups
from stnkit.training.errors import NonFiniteLossError
from stnkit.training.recipes import Recipe, get_recipe, recipe_settings

__all__ = ["NonFiniteLossError", "STNLitModule"]


class STNLitModule(pl.LightningModule):
    """Classification training of a registered model (cross-entropy; errors logged in %).

    Args:
        model: registered model name (:func:`stnkit.models.list_models`), e.g. ``"st-cnn"``.
        recipe: the optimisation settings (a :class:`~stnkit.training.Recipe`, its ``to_dict()``, or a recipe
            name): optimiser, learning rate and schedule (``steps`` is the schedule's length), the localisation
            nets' learning-rate multiplier, channels-last (ignored for 3-D models). The model's own
            ``loc_lr_scale`` argument, if any, goes in ``model_kwargs``.
        model_kwargs: the model builder's arguments (:func:`stnkit.models.model_args`), e.g.
            ``{"input_size": 28, "transform": "tps"}``; an argument it does not declare is refused.

    Batches are ``(images (N, C, S, S) float, labels (N,) int64)``.

    Every validation also logs ``val/st_blank``: the % of the first validation batch's images (of non-blank inputs)
    that some spatial transformer of the model turns into an all-zero output. A localisation net that diverges
    moves its window off the image, where zero padding gives no gradient back, and the classifier then sees
    nothing for the rest of the run (measured: an addition 2xST-FCN with Adam 3e-3 and a 3x localisation lr had
    |theta| ~ 20-100 and blank outputs for every image, its error stuck at chance); the first validation where
    more than half the images are blanked warns once, naming the usual remedies.

    It also logs ``val/st_frozen``: the % of the model's transformers whose localisation features are the same for
    every image of that batch. A localisation net whose ReLU units have all died outputs a constant transform: the
    layer is then a fixed warp, the model a CNN behind a fixed downsampling, and nothing brings the units back
    (measured: the RTS ST-CNN of the 15k-step ``cpu`` recipe, localisation lr x3, lost all 20 units of its last
    hidden layer between steps 6,000 and 7,000, at the one-cycle peak, and ended at 1.50 % test error, behind the
    CNN's 1.20 %). The first validation with a frozen transformer warns once.

    Raises:
        ValueError: unknown model, recipe or recipe value, or an argument the model's builder does not take.

    Example:
        >>> STNLitModule("fcn", "smoke", {"input_size": 28})(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        model: str = "st-cnn",
        recipe: Recipe | Mapping[str, Any] | str = "paper",
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(recipe, Mapping):
            recipe = Recipe(**recipe)
        self.recipe = get_recipe(recipe)  # validates every setting
        model_kwargs = dict(model_kwargs or {})
        self.save_hyperparameters({"model": model, "recipe": self.recipe.to_dict(), "model_kwargs": model_kwargs})
        self.model = models.build(model, **model_kwargs)
        # channels-last is a 4-D memory format: volume models (Conv3d, 5-D inputs) keep the default layout
        self.channels_last = self.recipe.channels_last and \
            not any(isinstance(m, torch.nn.Conv3d) for m in self.model.modules())
        self._transformers = [m for m in self.model.modules() if isinstance(m, SpatialTransformer)]
        self._blank: list[float] = []
        self._frozen: list[float] = []
        self._warned: set[str] = set()  # monitors that have warned already
        self.run_info: dict[str, Any] | None = None  # set by fit(): stored in every checkpoint
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> STNLitModule:
        """Rebuild a module from a checkpoint's ``hyper_parameters``: this version's, or the loose ones before it.

        Checkpoints written before recipes were passed whole hold the recipe's values, ``max_steps`` and the
        model's arguments side by side (``st_downsample`` ``"none"`` for no downsampling); the model gets the
        ones its builder declares, as it did then.

        Raises:
            ValueError: unknown model or recipe value, or arguments the model does not take.
        """
        if "recipe" in hparams:
            return cls(**hparams)
        hp = {**hparams, "st_downsample": None if hparams.get("st_downsample", "none") == "none" else
              hparams["st_downsample"]}
        values = {f.name: hp[f.name] for f in recipe_settings()
                  if f.name in hp and f.name not in ("steps", "st_downsample")}
        recipe = Recipe("checkpoint", **values, steps=hp.get("max_steps", Recipe.steps))
        model = hp.get("model", "st-cnn")
        names = ("transform", "input_size", "in_channels", "num_classes", "param_budget", "loc_lr_scale",
                 "st_downsample")
        given: dict[str, Any] = {k: hp[k] for k in names if k in hp}
        takes = models.model_args(model)
        kwargs = {k: v for k, v in given.items() if k in takes}
        return cls(model, recipe, {**kwargs, **(hp.get("model_kwargs") or {})})

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes) for images (N, C, S, S)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch: Any) -> tuple[Tensor, Tensor, int]:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        err = (logits.argmax(1) != y).float().mean() * 100.0  # % misclassified in this batch
        return loss, err, y.shape[0]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, err, n = self._step(batch)
        if not torch.isfinite(loss):  # host sync, once per step: no silent NaN training
            raise NonFiniteLossError(
                f"training stopped: non-finite loss ({loss.item()}) at step {self.global_step}; the last good "
                f"weights are in the run's last checkpoint. Try a lower --lr (now {self.recipe.lr}), a lower "
                f"--loc-lr-scale (now {self.recipe.loc_lr_scale}) or another --optimizer"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/err", err, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        watch = batch_idx == 0 and bool(self._transformers)
        handles = [st.register_forward_hook(self._measure_blank) for st in self._transformers] if watch else []
        handles += [st.head.register_forward_hook(self._measure_frozen) for st in self._transformers] if watch else []
        try:
            loss, err, n = self._step(batch)
        finally:
            for h in handles:
                h.remove()
        self.log("val/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/err", err, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)

    def _measure_blank(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output  # (N, C, ...) the warped input
        seen = args[0].detach().flatten(1).abs().amax(1) > 0  # (N,) inputs with any signal
        blank = out.detach().flatten(1).abs().amax(1) == 0  # (N,) outputs with none
        self._blank.append(float((blank & seen).float().sum() / seen.float().sum().clamp_min(1)) * 100.0)

    def _measure_frozen(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        features = args[0].detach().float().flatten(1)  # (N, F) what the localisation net gives the head
        if features.shape[0] > 1:  # dead: no feature varies over the batch (the head's zero init does not count)
            self._frozen.append(100.0 if float(features.std(dim=0).amax()) < 1e-6 else 0.0)

    def on_validation_epoch_end(self) -> None:
        scale = self.recipe.loc_lr_scale
        if self._frozen:
            frozen, self._frozen = sum(self._frozen) / len(self._frozen), []
            self._monitor("st_frozen", frozen, frozen > 0,
                          f"{frozen:.0f} % of the spatial transformers output the same transform for every validation "
                          "image: their localisation net's units have died (ReLUs stuck at zero), so each is a fixed "
                          f"warp from now on. Try a lower --loc-lr-scale (now {scale}) or --lr")
        if self._blank:
            worst, self._blank = max(self._blank), []
            self._monitor("st_blank", worst, worst > 50.0,
                          f"a spatial transformer outputs an all-zero image for {worst:.0f} % of the validation "
                          "images: its localisation net has diverged (the window left the image, where no gradient "
                          f"brings it back). Try a lower --loc-lr-scale (now {scale}) or --lr, or bounded parameters "
                          "(--bound, model_kwargs={'bound': ...})")

    def _monitor(self, name: str, value: float, alarm: bool, message: str) -> None:
        """Log ``val/<name>``; warn once per run the first time ``alarm`` holds (sanity checks excluded)."""
        self.log(f"val/{name}", value, sync_dist=True)
        if alarm and name not in self._warned and not self.trainer.sanity_checking:
            self._warned.add(name)
            rank_zero_warn(f"step {self.global_step}: {message}")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, err, n = self._step(batch)
        self.log("test/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("test/err", err, on_epoch=True, batch_size=n, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_info is not None:  # lets a checkpoint alone be evaluated and visualised
            from stnkit import __version__

            checkpoint["stnkit"] = {"config": self.run_info, "version": __version__}

    def configure_optimizers(self) -> Any:
        hp = self.recipe
        groups = param_groups(self.model, hp.lr, hp.weight_decay)  # localisation nets at lr * loc_lr_scale
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=hp.lr)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "step":
            sched: Any = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_size, gamma=hp.gamma)
        elif hp.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.steps)
        else:
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=[g["lr"] for g in groups], total_steps=hp.steps, pct_start=hp.pct_start,
                cycle_momentum=hp.optimizer == "sgd" and hp.momentum > 0,
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

