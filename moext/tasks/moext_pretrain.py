"""MoExt pretraining: L = L_re + a1 L_st + a2 L_ss on onset/apex pairs (micro and macro)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from moext.losses.moext import (
    REDUCTIONS,
    Reduction,
    active_share,
    reconstruction_loss,
    shape_shape_terms,
    shape_texture_terms,
)
from moext.nn.moext import MoExt, MoExtConfig
from moext.tasks.base import PretrainingTask
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.images import save_reconstruction_grid
from moext.tasks.moext_views import AUGMENTATIONS, apex_mask, expansion_views
from moext.tasks.speed import memory_format

# Checkpoints keep the architecture in their hyper-parameters; before the package was layered
# it was pickled as moext.models.MoExtConfig.
allow_in_checkpoints(MoExtConfig, "moext.models.MoExtConfig")


class MoExtPretrainTask(PretrainingTask):
    """Self-supervised pretraining of the feature separator, motion extractor and decoder.

    Batches are dicts with ``onset`` and ``apex`` (B, 3, H, W) float in [0, 1] (the
    DataModule has already applied the geometric augmentation shared by the pair).

    Logged per epoch: ``train/loss`` and each term ``train/loss_re`` / ``_st`` / ``_ss``, and the
    share of active hinge terms of L_st and L_ss (``train/active_st``, ``train/active_ss``;
    ``val/...`` likewise): a share of 0 means that term gives no gradient, and a training epoch
    with a share of 0 is also warned about (once per term).

    Args:
        net: the MoExt architecture (shared with :class:`moext.tasks.MoExtClassifyTask`).
        views: m, views per frame in an expansion set (paper 3): the original and m - 1 views
            made with m - 1 different operations (so m - 1 <= 3).
        reconstruction_reduction: how L_re (Eq. 5) reduces |X_a - X~_a| (the paper does not
            say): ``"per_pixel_mean"`` (mean over all elements; the experiments' choice) or
            ``"per_image_sum"`` (each image's L1 sum, averaged over images; 3*H*W times
            larger). See :func:`moext.losses.moext.reconstruction_loss`.
        weight_re: weight of L_re (paper 1); 0 switches the term off.
        weight_st: a1, weight of L_st (paper 0.5); 0 switches it off (ablation "w/o L_st").
        weight_ss: a2, weight of L_ss (paper 1); 0 switches it off (ablation "w/o L_ss").
        margin_st: eps of Eq. 6 (paper: in [0.2, 0.5]).
        margin_ss: eps of Eq. 8 (paper: in [0.2, 0.5]).
        noise_std: standard deviation of the noise view.
        contrast_range: range of the contrast-increase factor.
        lr: Adam learning rate (paper 1e-4).
        weight_decay: Adam weight decay (paper 1e-4).
        channels_last: NHWC memory format for the convolutions (faster on tensor cores).
        compile: ``torch.compile`` the feature separator (and decoder); the state-dict keys
            are unchanged, so checkpoints stay interchangeable.
        image_every_n_epochs: log an onset / apex / reconstruction grid every N epochs (0: never).
        images_logged: how many pairs the grid shows.
    """

    def __init__(
        self,
        net: MoExtConfig | None = None,
        views: int = 3,
        reconstruction_reduction: Reduction = "per_pixel_mean",
        weight_re: float = 1.0,
        weight_st: float = 0.5,
        weight_ss: float = 1.0,
        margin_st: float = 0.3,
        margin_ss: float = 0.3,
        noise_std: float = 0.03,
        contrast_range: tuple[float, float] = (1.2, 1.8),
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = False,
        compile: bool = False,
        image_every_n_epochs: int = 5,
        images_logged: int = 8,
    ) -> None:
        net = net or MoExtConfig()  # saved as given here by the base's save_hyperparameters
        if not 1 <= views <= len(AUGMENTATIONS) + 1:
            raise ValueError(
                f"views (m) must be in [1, {len(AUGMENTATIONS) + 1}]: the m - 1 extra views use "
                f"different operations of {AUGMENTATIONS}, got {views}"
            )
        if reconstruction_reduction not in REDUCTIONS:
            raise ValueError(
                f"reconstruction_reduction must be one of {REDUCTIONS}, "
                f"got {reconstruction_reduction!r}"
            )
        if min(weight_re, weight_st, weight_ss) < 0 or weight_re + weight_st + weight_ss == 0:
            raise ValueError("loss weights must be >= 0 and not all 0")
        for name, margin in (("margin_st", margin_st), ("margin_ss", margin_ss)):
            if margin <= 0:
                raise ValueError(f"{name} must be > 0, got {margin}")
        super().__init__(net)
        self._grid: tuple[Tensor, Tensor, Tensor] | None = None
        self._inactive_warned: set[str] = set()

    def build_net(self, net: MoExtConfig) -> MoExt:
        """A :class:`~moext.nn.moext.MoExt` with the texture branch, decoder and projection head."""
        return MoExt(net, pretraining=True)

    def forward(self, onset: Tensor, apex: Tensor) -> Tensor:
        """Reconstruct the apex. (B, 3, H, W) x2 -> (B, 3, H, W)."""
        s_on, t_on = self.net.separator(onset)
        s_ap, _ = self.net.separator(apex)
        return self.net.reconstruct(self.net.motion(s_on, s_ap), t_on)

    def losses(self, onset: Tensor, apex: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """All loss terms of one batch.

        Args:
            onset: (n, 3, H, W) in [0, 1].
            apex: (n, 3, H, W) in [0, 1].

        Returns:
            The terms switched on (``re``, ``st``, ``ss``) and the reconstruction (n, 3, H, W).
        """
        terms, _, recon = self.losses_and_activity(onset, apex)
        return terms, recon

    def losses_and_activity(
        self, onset: Tensor, apex: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """As :meth:`losses`, plus the share of active hinge terms of L_st and L_ss.

        Returns:
            The terms switched on, the active shares (``st``, ``ss``: scalars in [0, 1], for
            the terms switched on) and the reconstruction (n, 3, H, W).
        """
        hp = self.hparams
        m = hp.views
        n = onset.shape[0]
        images = expansion_views(onset, apex, m, hp.noise_std, tuple(hp.contrast_range))
        shape, texture = self.net.separator(
            memory_format(images.flatten(0, 1), hp.channels_last)
        )  # (n*2m, D) each
        shape = shape.view(n, 2 * m, -1)
        texture = texture.view(n, 2 * m, -1)
        motion = self.net.motion(shape[:, 0], shape[:, m])  # original onset and apex views
        recon = self.net.reconstruct(motion, texture[:, 0])
        terms: dict[str, Tensor] = {}
        active: dict[str, Tensor] = {}
        if hp.weight_re > 0:
            terms["re"] = reconstruction_loss(recon, apex, hp.reconstruction_reduction)
        if hp.weight_st > 0 or hp.weight_ss > 0:
            proj = self.net.projection
            z_shape = proj(shape.flatten(0, 1)).view(n, 2 * m, -1)
            if hp.weight_st > 0:
                z_texture = proj(texture.flatten(0, 1)).view(n, 2 * m, -1)
                z_anchor = proj(shape.mean(dim=(0, 1))[None])[0]  # f(S_bar): project the mean
                hinges = shape_texture_terms(z_shape, z_texture, z_anchor, hp.margin_st)
                terms["st"] = hinges.mean()
                active["st"] = active_share(hinges)
            if hp.weight_ss > 0:
                is_apex = apex_mask(m, onset.device)
                pull, push = shape_shape_terms(z_shape, is_apex, hp.margin_ss)
                terms["ss"] = (pull + push).mean()
                active["ss"] = active_share(push, is_apex[:, None] != is_apex[None, :])
        return terms, active, recon

    def batch_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``loss`` = L_re + a1 L_st + a2 L_ss (the terms switched on), each term, active shares.

        The terms are ``loss_re``, ``loss_st``, ``loss_ss``, the active shares ``active_st``,
        ``active_ss``. In training, the first batch of an epoch that logs images keeps its grid.
        """
        hp = self.hparams
        onset = memory_format(batch["onset"], hp.channels_last)
        apex = memory_format(batch["apex"], hp.channels_last)
        terms, active, recon = self.losses_and_activity(onset, apex)
        weights = {"re": hp.weight_re, "st": hp.weight_st, "ss": hp.weight_ss}
        if self.training and self._grid is None and self._should_log_images():
            k = hp.images_logged
            self._grid = (onset[:k].detach(), apex[:k].detach(), recon[:k].detach())
        return (
            {"loss": sum(weights[k] * v for k, v in terms.items())}
            | {f"loss_{k}": v for k, v in terms.items()}
            | {f"active_{k}": v for k, v in active.items()}
        )

    def _should_log_images(self) -> bool:
        n = self.hparams.image_every_n_epochs
        if n <= 0:
            return False
        last = (
            self.trainer.max_epochs is not None
            and self.current_epoch == self.trainer.max_epochs - 1
        )
        return self.current_epoch % n == 0 or last

    def on_train_epoch_end(self) -> None:
        """Warn of inactive terms; save (and log to W&B) the epoch's reconstruction grid if kept."""
        self._warn_inactive_terms()
        if self._grid is None:
            return
        onset, apex, recon = self._grid
        self._grid = None
        # trainer.log_dir broadcasts from rank 0: every rank must ask, before rank 0 goes alone
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "reconstructions"
        if not self.trainer.is_global_zero:
            return
        path = save_reconstruction_grid(
            onset, apex, recon, out_dir / f"epoch_{self.current_epoch:03d}.png"
        )
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(
                    key="train/reconstructions", images=[str(path)], step=self.global_step
                )

    def _warn_inactive_terms(self) -> None:
        """Warn (once per term) when no hinge term of L_st or L_ss fired in a whole epoch."""
        for k, name in (("st", "L_st"), ("ss", "L_ss")):
            share = self.trainer.callback_metrics.get(f"train/active_{k}")
            if share is None or float(share) > 0 or k in self._inactive_warned:
                continue
            self._inactive_warned.add(k)
            rank_zero_warn(
                f"{type(self).__name__}: train/active_{k} = 0 in epoch {self.current_epoch}: no "
                f"hinge term of {name} fired, so it gives no gradient (margin_{k} "
                f"{self.hparams[f'margin_{k}']}, projection_normalize "
                f"{self.net.cfg.projection_normalize}; see docs/methods/moext.md)"
            )
