"""SRMCL pretraining: self-expression reconstruction (SER) alone, on flow images, no labels.

The authors' code trains SER jointly with the classifier (:class:`moext.tasks.SRMCLClassifyTask`
does that too); this stage trains the encoder and decoder on SER only, once, so that every LOSO
fold can start from it (``loso.pretrain_config``), like MoExt's pretraining. With one run for
all folds it has seen the held-out subject's flow (never its labels) when that subject is in
the pretraining data; ``loso.pretrain_per_fold: true`` removes that exposure.
"""

from __future__ import annotations

from torch import Tensor

from moext.losses.srmcl import masked_reconstruction_loss
from moext.nn.srmcl import SRMCL, MaskSite, SRMCLConfig
from moext.tasks.base import PretrainingTask
from moext.tasks.checkpoints import allow_in_checkpoints
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


class SRMCLPretrainTask(PretrainingTask):
    """SER pretraining of SRMCL's encoder and decoder.

    Batches: ``flow`` (B, C, H, W) float in [0, 1] (a :class:`moext.data.FlowDataModule`).

    Args:
        net: the architecture (shared with the classifier).
        mask_ratio: share of the patch positions masked in every round (code default 0.75).
        mask_rounds: cascaded masking rounds; L_SR sums their losses (the code's
            reconstruction-only path: 1; its joint path and moext before: 2).
        mask_site: ``tokens`` (the code: encoder output tokens) or ``patches`` (the README:
            input patches, never seen by the encoder).
        lr: AdamW learning rate (ours: the code has no training script).
        weight_decay: AdamW weight decay (ours, likewise).
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
        net = net or SRMCLConfig()  # saved as given here by the base's save_hyperparameters
        check_masking(mask_ratio, mask_rounds, mask_site)
        check_schedule(lr, weight_decay, lr_schedule, warmup_epochs)
        super().__init__(net)

    def build_net(self, net: SRMCLConfig) -> SRMCL:
        """An :class:`~moext.nn.srmcl.SRMCL` encoder and decoder, no classifier."""
        return SRMCL(net, num_classes=None)

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

    def batch_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``loss`` = L_SR and each round's term (``loss_rec1``, ``loss_rec2``, ...)."""
        terms = self.losses(batch["flow"])
        return {"loss": terms.pop("sr")} | {f"loss_{k}": v for k, v in terms.items()}

    def configure_optimizers(self):
        """AdamW with warm-up, then ``lr_schedule`` (:func:`configure_vit_optimizer`)."""
        hp = self.hparams
        return configure_vit_optimizer(
            self, self.trainer, hp.lr, hp.weight_decay, hp.lr_schedule, hp.warmup_epochs
        )
