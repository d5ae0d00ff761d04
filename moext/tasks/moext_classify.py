"""MoExt objective learning: the pretrained separator and motion extractor, fine-tuned.

The separator's shape branch and the motion extractor are fine-tuned with cross-entropy on
micro-expressions.
"""

from __future__ import annotations

from torch import Tensor

from moext.nn.moext import ARCHITECTURE_FIELDS, LEFT_BEHIND, TRANSFERRED, MoExt, MoExtConfig
from moext.tasks.base import ClassificationTask
from moext.tasks.checkpoints import Transfer
from moext.tasks.speed import memory_format

#: What a MoExt classifier takes from a MoExt pretraining checkpoint.
MOEXT_TRANSFER = Transfer(TRANSFERRED, LEFT_BEHIND, ARCHITECTURE_FIELDS)


class MoExtClassifyTask(ClassificationTask):
    """The classifier: texture branch and decoder removed, a classifier head on M.

    Batches: ``onset``, ``apex`` (B, 3, H, W) float in [0, 1], ``label`` (B,), ``index`` (B,).

    Args:
        net: the MoExt architecture; must agree with the pretraining checkpoint's.
        num_classes: number of classes of the protocol (checked against the DataModule).
        pretrained: path of a :class:`moext.tasks.MoExtPretrainTask` checkpoint; its backbone,
            shape branch and motion extractor are loaded (mismatched keys are an error).
            ``None`` trains from scratch (ablation "w/o pretraining").
        lr: Adam learning rate (paper 1e-4).
        weight_decay: Adam weight decay (paper 1e-4).
        channels_last: NHWC memory format for the convolutions (faster on tensor cores).
        compile: ``torch.compile`` the feature separator (and decoder); the state-dict keys
            are unchanged, so checkpoints stay interchangeable.
        dropout: dropout before the classifier's linear layer. Not in the paper (whose
            classifier head is not described): 0 (off) is the paper's reading and the paper
            configs' value; the demo config uses its own.
        label_smoothing: cross-entropy label smoothing (paper: none).
    """

    inputs = "pairs"
    transfer = MOEXT_TRANSFER

    def __init__(
        self,
        net: MoExtConfig | None = None,
        num_classes: int = 3,
        pretrained: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = False,
        compile: bool = False,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        net = net or MoExtConfig()  # saved as given here by the base's save_hyperparameters
        super().__init__(net, num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: MoExtConfig) -> MoExt:
        """A :class:`~moext.nn.moext.MoExt` classifier: separator, motion extractor and head."""
        hp = self.hparams
        return MoExt(net, pretraining=False, num_classes=hp.num_classes, dropout=hp.dropout)

    def from_scratch(self) -> str:
        """Without ``pretrained``: from the backbone's ImageNet weights or at random (ablation)."""
        start = (
            "from the backbone's ImageNet weights"
            if self.net.cfg.pretrained_backbone
            else "at random"
        )
        return f"{start} (the 'w/o pretraining' ablation)"

    def forward(self, onset: Tensor, apex: Tensor) -> Tensor:
        """(B, 3, H, W) x2 -> logits (B, num_classes)."""
        cl = self.hparams.channels_last
        return self.net.classify(memory_format(onset, cl), memory_format(apex, cl))

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the batch's ``onset`` and ``apex``."""
        return self(batch["onset"], batch["apex"])
