"""SRMCL classification: the joint objective of the authors' code on flow images.

    L = L_CE + w_sr L_SR + w_pmcl L_PMCL            (VIT_SRMCL.py:323-334: w_sr = w_pmcl = 0.5)

with L_SR the self-expression reconstruction of the masked rounds and L_PMCL the contrastive
loss against the class-prototype memory (:mod:`moext.losses.srmcl`). Training features come
from the masked path, test features from the unmasked one (as in the code). The memory is a
buffer of the network (saved in checkpoints; every fold builds a fresh model, so it starts
from zero per fold), updated after every training batch with the momentum rule and, by
default, re-initialised at the start of every epoch from the class means of the training
features (the framework figure's "Every Epoch: ... Averaging -> Initialization"). Under DDP the
features and labels of every rank are gathered before an update, and the epoch's class sums are
reduced over the ranks, so all ranks hold the same prototypes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from moext.losses.srmcl import prototype_contrastive_loss, self_expression_loss
from moext.nn.srmcl import (
    ARCHITECTURE_FIELDS,
    LEFT_BEHIND,
    SRMCL,
    TRANSFERRED,
    MaskSite,
    SRMCLConfig,
    class_sums,
    momentum_update,
    prototypes_from_sums,
)
from moext.tasks.base import ClassificationTask
from moext.tasks.checkpoints import Transfer
from moext.tasks.srmcl_optim import LrSchedule, check_schedule, configure_vit_optimizer
from moext.tasks.srmcl_pretrain import check_masking

#: What an SRMCL classifier takes from an SRMCL pretraining checkpoint: encoder and decoder.
SRMCL_TRANSFER = Transfer(TRANSFERRED, LEFT_BEHIND, ARCHITECTURE_FIELDS)

MemoryInit = Literal["epoch", "none"]


class SRMCLClassifyTask(ClassificationTask):
    """SRMCL's classifier, trained with CE + SER + PMCL.

    Batches: ``flow`` (B, C, H, W) float in [0, 1], ``label`` (B,), ``index`` (B,).

    Args:
        net: the architecture; must agree with the pretraining checkpoint's.
        num_classes: classes of the protocol (checked against the DataModule).
        pretrained: path of a :class:`moext.tasks.SRMCLPretrainTask` checkpoint: its encoder and
            decoder are loaded (mismatched keys are an error). ``None``: from scratch (what the
            authors' code does).
        mask_ratio: share of the patch positions masked per round (code default 0.75).
        mask_rounds: cascaded masking rounds (code 2).
        mask_site: ``tokens`` (code) or ``patches`` (README); see :mod:`moext.nn.srmcl`.
        weight_sr: w_sr, weight of L_SR (code 0.5); 0 switches SER off (no decoding).
        weight_pmcl: w_pmcl, weight of L_PMCL (code 0.5); 0 switches the memory off.
        temperature: tau of L_PMCL (code 0.05).
        momentum: m of the memory update (code 0.1).
        memory_init: ``epoch`` (every epoch starts from the normalised class means of the
            training set's masked features, computed without gradients in eval mode) or
            ``none`` (the memory starts at zero and only the momentum rule updates it).
        lr: AdamW learning rate (ours).
        weight_decay: AdamW weight decay (ours).
        lr_schedule: ``cosine`` or ``constant``, per step.
        warmup_epochs: epochs of linear learning-rate warm-up.
        label_smoothing: cross-entropy label smoothing (code: none).
    """

    inputs = "flow"
    transfer = SRMCL_TRANSFER

    def __init__(
        self,
        net: SRMCLConfig | None = None,
        num_classes: int = 3,
        pretrained: str | None = None,
        mask_ratio: float = 0.75,
        mask_rounds: int = 2,
        mask_site: MaskSite = "tokens",
        weight_sr: float = 0.5,
        weight_pmcl: float = 0.5,
        temperature: float = 0.05,
        momentum: float = 0.1,
        memory_init: MemoryInit = "epoch",
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        lr_schedule: LrSchedule = "cosine",
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        net = net or SRMCLConfig()  # saved as given here by the base's save_hyperparameters
        check_masking(mask_ratio, mask_rounds, mask_site)
        check_schedule(lr, weight_decay, lr_schedule, warmup_epochs)
        if weight_sr < 0 or weight_pmcl < 0:
            raise ValueError("weight_sr and weight_pmcl must be >= 0")
        if temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError("temperature must be > 0 and momentum in [0, 1)")
        if memory_init not in ("epoch", "none"):
            raise ValueError(f"memory_init must be 'epoch' or 'none', got {memory_init!r}")
        super().__init__(net, num_classes, lr, weight_decay, label_smoothing)
        self._train_out: tuple[Tensor, list[Tensor], list[Tensor], Tensor] | None = None
        self._update: tuple[Tensor, Tensor] | None = None

    def build_net(self, net: SRMCLConfig) -> SRMCL:
        """An :class:`~moext.nn.srmcl.SRMCL` with its last block, head and prototype memory."""
        return SRMCL(net, num_classes=self.hparams.num_classes)

    def from_scratch(self) -> str:
        """Without ``pretrained``: at random, as the authors' code trains."""
        return "at random (as the authors' code trains)"

    # ------------------------------------------------------------------ forward
    def forward(self, flow: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> logits (B, num_classes), nothing masked (test path)."""
        return self.net.classify(flow)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the batch's ``flow``: masked in training, unmasked otherwise.

        Training: the masked path (its SER predictions kept for :meth:`training_loss`);
        evaluation and prediction: the unmasked path.
        """
        flow = batch["flow"]
        if not self.training:
            return self(flow)
        hp = self.hparams
        feature, preds, masks = self.net.forward_train(
            flow, hp.mask_ratio, hp.mask_rounds, hp.mask_site, decode=hp.weight_sr > 0
        )
        self._train_out = (feature, preds, masks, flow)
        return self.net.head(feature)

    # ------------------------------------------------------------------ losses
    def loss_terms(self, batch: dict[str, Tensor], logits: Tensor) -> dict[str, Tensor]:
        """The switched-on terms ``ce``, ``sr``, ``pmcl`` of a training batch.

        Called after :meth:`logits`; stores the normalised features for the memory update.
        """
        if self._train_out is None:
            raise RuntimeError("loss_terms needs the training forward of logits() first")
        feature, preds, masks, flow = self._train_out
        self._train_out = None
        hp, labels = self.hparams, batch["label"]
        terms = {"ce": self.cross_entropy(batch, logits)}
        if hp.weight_sr > 0:
            terms["sr"] = self_expression_loss(preds, self.net.target(flow), masks)
        if hp.weight_pmcl > 0:
            f = F.normalize(feature.float(), dim=1)
            terms["pmcl"] = prototype_contrastive_loss(
                f, labels, self.net.memory.prototypes, hp.temperature
            )
            self._update = (f.detach(), labels.detach())
        return terms

    def training_loss(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """CE + ``weight_sr`` L_SR + ``weight_pmcl`` L_PMCL (the terms switched on), each logged."""
        terms = self.loss_terms(batch, logits)
        weights = {"ce": 1.0, "sr": self.hparams.weight_sr, "pmcl": self.hparams.weight_pmcl}
        self.log_epoch("train", {f"loss_{k}": v for k, v in terms.items()}, len(logits))
        return sum(weights[k] * v for k, v in terms.items())

    # ------------------------------------------------------------------ memory
    def _gather(self, x: Tensor) -> Tensor:
        """``x`` (B, ...) of every rank, concatenated (itself on one process)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return self.all_gather(x).flatten(0, 1) if world > 1 else x

    def update_memory(self, features: Tensor, labels: Tensor) -> None:
        """The momentum update with every rank's normalised features (B, D) and labels (B,)."""
        features, labels = self._gather(features), self._gather(labels)
        memory = self.net.memory.prototypes
        memory.copy_(momentum_update(memory, features.to(memory), labels, self.hparams.momentum))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the memory with the batch's features (momentum rule).

        After the optimiser step (the code: inside the memory's backward), so the loss of this
        batch used the prototypes as they were.
        """
        if self._update is not None:
            features, labels = self._update
            self._update = None
            self.update_memory(features, labels)

    @torch.no_grad()
    def initialise_memory(self) -> None:
        """Prototypes <- normalised class means of the training set's masked features.

        In eval mode, without gradients; class sums are reduced over the DDP ranks (each sees
        its share of the training set). A class absent from the training set keeps its
        prototype.
        """
        hp, trainer = self.hparams, self.trainer
        memory = self.net.memory.prototypes
        sums = torch.zeros_like(memory)
        counts = torch.zeros(memory.shape[0], device=memory.device)
        was_training = self.training
        self.eval()
        try:
            for batch in trainer.train_dataloader:  # collated and moved outside autocast
                batch = trainer.strategy.batch_to_device(batch)
                with trainer.precision_plugin.forward_context():
                    feature, _, _ = self.net.forward_train(
                        batch["flow"], hp.mask_ratio, hp.mask_rounds, hp.mask_site, decode=False
                    )
                s, c = class_sums(F.normalize(feature.float(), dim=1), batch["label"], len(counts))
                sums += s
                counts += c
        finally:
            self.train(was_training)
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        memory.copy_(prototypes_from_sums(sums, counts, memory))

    def on_train_epoch_start(self) -> None:
        """Re-initialise the memory from the class means (``memory_init: epoch``, L_PMCL on)."""
        if self.hparams.weight_pmcl > 0 and self.hparams.memory_init == "epoch":
            self.initialise_memory()

    def configure_optimizers(self):
        """AdamW with warm-up, then ``lr_schedule`` (:func:`configure_vit_optimizer`)."""
        hp = self.hparams
        return configure_vit_optimizer(
            self, self.trainer, hp.lr, hp.weight_decay, hp.lr_schedule, hp.warmup_epochs
        )
