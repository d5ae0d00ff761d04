"""SRMCL pretraining: self-expression reconstruction (SER) alone, on flow images, no labels.

The authors' code trains SER jointly with the classifier (:class:`moext.tasks.SRMCLClassifyTask`
does that too); this stage trains the encoder and decoder on SER only, once, so that every LOSO
fold can start from it (``loso.pretrain_config``), like MoExt's pretraining. With one run for
all folds it has seen the held-out subject's flow (never its labels) when that subject is in
the pretraining data; ``loso.pretrain_per_fold: true`` removes that exposure.
"""

from __future__ import annotations

import lightning as L
from torch import Tensor

from moext.losses.srmcl import masked_reconstruction_loss
from moext.nn.srmcl import SRMCL, MaskSite, SRMCLConfig
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.data_checks import check_image_size, check_inputs
from moext.tasks.srmcl_optim import LrSchedule, check_schedule, configure_vit_optimizer

allow_in_checkpoints(SRMCLConfig)


def check_masking(mask_ratio: float, mask_rounds: int, mask_site: str) -> None:
    """Raise ValueError on masking settings the network cannot use."""
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if mask_rounds < 1:
        raise ValueError(f"mask_rounds must be >= 1, got {mask_rounds}")
    if mask_site not in ("tokens", "patches"):
        raise ValueError(f"mask_site must be 'tokens' or 'patches', got {mask_site!r}")


def check_flow_data(cfg: SRMCLConfig, trainer) -> None:
    """Raise when the DataModule's flow images do not fit the network (size, channels)."""
    check_image_size(cfg.image_size, trainer)
    served = getattr(getattr(trainer, "datamodule", None), "num_channels", None)
    if served is not None and served != cfg.in_channels:
        raise ValueError(
            f"model.init_args.net.in_channels={cfg.in_channels} but the data serves {served} "
            "flow channels (data.init_args.channels): set both to agree"
        )


class SRMCLPretrainTask(L.LightningModule):
    """SER pretraining of SRMCL's encoder and decoder.

    Batches: ``flow`` (B, C, H, W) float in [0, 1] (a :class:`moext.data.FlowDataModule`).

    Args:
        net: the architecture (shared with the classifier).
        mask_ratio: share of the patch positions masked in every round (code default 0.75).
        mask_rounds: cascaded masking rounds; L_SR sums their losses (the code's
            reconstruction-only path: 1; its joint path and moext before: 2).
        mask_site: ``tokens`` (the code: encoder output tokens) or ``patches`` (the README:
            input patches, never seen by the encoder).
        lr, weight_decay: AdamW (ours: the code has no training script).
        lr_schedule: ``cosine`` or ``constant``, per step.
        warmup_epochs: epochs of linear learning-rate warm-up.
    """

    inputs = "flow"

    def __init__(
        self,
        net: SRMCLConfig | None = None,
        mask_ratio: float = 0.75,
        mask_rounds: int = 1,
        mask_site: MaskSite = "tokens",
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        lr_schedule: LrSchedule = "cosine",
        warmup_epochs: float = 0.0,
    ) -> None:
        super().__init__()
        net = net or SRMCLConfig()
        check_masking(mask_ratio, mask_rounds, mask_site)
        check_schedule(lr, weight_decay, lr_schedule, warmup_epochs)
        self.save_hyperparameters()
        self.net = SRMCL(net, num_classes=None)

    def setup(self, stage: str) -> None:
        check_inputs(self, self.trainer)
        check_flow_data(self.net.cfg, self.trainer)

    def losses(self, flow: Tensor) -> dict[str, Tensor]:
        """Each round's masked reconstruction loss (``rec1``, ``rec2``, ...) and their sum ``sr``.

        Args:
            flow: (B, C, H, W) in [0, 1].
        """
        hp = self.hparams
        _, preds, masks = self.net.forward_train(flow, hp.mask_ratio, hp.mask_rounds, hp.mask_site)
        target = self.net.target(flow)
        terms = {
            f"rec{r + 1}": masked_reconstruction_loss(p, target, m)
            for r, (p, m) in enumerate(zip(preds, masks, strict=True))
        }
        terms["sr"] = sum(terms.values())
        return terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch["flow"])
        bs = batch["flow"].shape[0]
        for k, v in terms.items():
            if k != "sr":
                self.log(f"train/loss_{k}", v, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log(
            "train/loss", terms["sr"], on_step=True, on_epoch=True, prog_bar=True,
            batch_size=bs, sync_dist=True,
        )  # fmt: skip
        return terms["sr"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log(
            "val/loss",
            self.losses(batch["flow"])["sr"],
            batch_size=len(batch["flow"]),
            sync_dist=True,
        )

    def configure_optimizers(self):
        hp = self.hparams
        return configure_vit_optimizer(
            self, self.trainer, hp.lr, hp.weight_decay, hp.lr_schedule, hp.warmup_epochs
        )
