"""Action-unit (AU) detection: any method's classifier, turned into a multi-label detector.

An AU detector is the method's classifier with one logit per detected AU instead of one per
class: the same network (backbone, pretrained parts, transfer), the same inputs and DataModules
(pairs / flow / clips), trained with binary cross-entropy per AU (:func:`moext.losses.au.au_bce`)
against the multi-hot ``aus`` (B, A) that a DataModule with ``protocol: au`` serves beside
``label``. :class:`AUDetection` holds what every detector shares; a method's detector is a few
lines: its classifier with :class:`AUDetection` first among the bases, and an ``__init__`` that
takes ``aus`` instead of ``num_classes``::

    class STSTNetAUTask(AUDetection, STSTNetClassifyTask):
        def __init__(self, net=None, aus=None, lr=5e-5, weight_decay=1e-4, threshold=0.5,
                     pos_weight="none"):
            aus = detected_aus(aus)
            super().__init__(net, len(aus), lr, weight_decay)
            self.init_detection(aus, threshold, pos_weight)

(plus its export in :mod:`moext.tasks`). A method's loss terms that need class labels (SRMCL's
prototype contrastive loss) are switched off; label-free terms (SRMCL's self-expression
reconstruction) stay.

Predictions: ``probs`` (B, A) sigmoid per AU and ``pred`` (B, A) 0/1 (``probs >= threshold``);
the LOSO runner writes them per AU and pools F1 per AU and their mean
(:mod:`moext.experiment.au_metrics`). Logged per epoch: ``<stage>/loss`` and ``<stage>/f1``
(macro F1 over the AUs at ``threshold``, for monitoring; the result is the pooled one).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelF1Score

from moext.losses.au import au_bce, balanced_pos_weight
from moext.nn.moext import MoExtConfig
from moext.nn.srmcl import MaskSite, SRMCLConfig
from moext.nn.ststnet import STSTNetConfig
from moext.tasks.data_checks import data_setting
from moext.tasks.moext_classify import MoExtClassifyTask
from moext.tasks.srmcl_classify import SRMCLClassifyTask
from moext.tasks.srmcl_optim import LrSchedule
from moext.tasks.ststnet import STSTNetClassifyTask

#: The AUs detected unless a config says otherwise: those frequent across the databases (each
#: coded in 50 or more clips of MEB's six-database union). The same list as the data layer's
#: ``moext.data.protocols.DEFAULT_AUS`` (tasks never import the data layer; a test keeps the
#: two equal).
DEFAULT_AUS = (1, 2, 4, 6, 12, 14, 15, 17)

PosWeight = Literal["none", "balanced"]


def detected_aus(aus: list[int] | tuple[int, ...] | None) -> tuple[int, ...]:
    """The AU numbers a detector detects: ``aus`` (default :data:`DEFAULT_AUS`), checked.

    Raises:
        ValueError: fewer than two AUs, a number outside 1..99, or one named twice.
    """
    aus = tuple(DEFAULT_AUS if aus is None else aus)
    if len(aus) < 2:
        raise ValueError(f"aus: detect at least two action units, got {list(aus)}")
    bad = [a for a in aus if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= 99]
    if bad:
        raise ValueError(f"aus must be AU numbers in 1..99, got {bad}")
    if len(set(aus)) != len(aus):
        raise ValueError(f"aus names an AU more than once: {list(aus)}")
    return aus


def check_au_targets(task: Any, trainer: Any) -> None:
    """Raise when the DataModule does not serve the AU targets the task detects.

    Checked where both state them: a task's ``aus``, a DataModule's ``aus``.

    Raises:
        ValueError: naming both lists and the settings that make them agree.
    """
    detected = getattr(task, "aus", None)
    dm = getattr(trainer, "datamodule", None)
    if detected is None or dm is None or not hasattr(dm, "aus"):
        return
    served = tuple(data_setting(trainer, "aus") or ())
    if not served:
        raise ValueError(
            f"{type(task).__name__} detects AUs {list(detected)} but "
            f"{type(dm).__name__} serves no AU targets: set data.init_args.protocol: au and "
            f"data.init_args.aus: {list(detected)}"
        )
    if served != tuple(detected):
        raise ValueError(
            f"model.init_args.aus={list(detected)} but data.init_args.aus={list(served)}: the "
            "model detects the AUs the data serves, in the same order; set both to one list"
        )


def detection_metrics(num_aus: int, threshold: float) -> MetricCollection:
    """``f1``: macro F1 over the AUs at ``threshold``, accumulated over an epoch."""
    return MetricCollection({"f1": MultilabelF1Score(num_aus, threshold, average="macro")})


class AUDetection:
    """What every AU detector shares; the first base of a method's detector.

    See the module docstring. After the classifier's ``__init__`` (built with
    ``num_classes = len(aus)``), :meth:`init_detection` sets the detected AUs, the metrics and
    the loss weights.
    """

    aus: tuple[int, ...]
    threshold: float

    def init_detection(
        self, aus: tuple[int, ...], threshold: float, pos_weight: str, **fixed: Any
    ) -> None:
        """Set up detection of ``aus`` (after the classifier's ``__init__``).

        Args:
            aus: the AU numbers (:func:`detected_aus`).
            threshold: probability from which an AU is predicted present.
            pos_weight: ``none`` or ``balanced``.
            **fixed: the classifier's settings that the detector fixes instead of taking
                (SRMCL's ``weight_pmcl=0``), recorded in ``hparams`` where the classifier reads
                them (a task that LightningCLI built records only its own arguments).

        Raises:
            ValueError: ``threshold`` outside (0, 1) or an unknown ``pos_weight``.
        """
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if pos_weight not in ("none", "balanced"):
            raise ValueError(f"pos_weight must be 'none' or 'balanced', got {pos_weight!r}")
        self.aus, self.threshold, self.pos_weight_mode = tuple(aus), threshold, pos_weight
        self.hparams.update(fixed)  # type: ignore[attr-defined]
        for stage in ("train", "val", "test"):
            metrics = detection_metrics(len(aus), threshold).clone(prefix=f"{stage}/")
            setattr(self, f"{stage}_metrics", metrics)
        self.register_buffer("pos_weight", torch.ones(len(aus)), persistent=False)

    def build_net(self, net: Any) -> Any:
        """The classifier's network with one output per detected AU.

        Its ``num_classes``: a task that LightningCLI built records only the config's
        arguments, which name ``aus``.
        """
        hparams = self.hparams  # type: ignore[attr-defined]
        hparams.setdefault("num_classes", len(detected_aus(hparams.get("aus"))))
        return super().build_net(net)  # type: ignore[misc]

    def setup(self, stage: str) -> None:
        """Check the AU targets the data serves, then the classifier's checks; weigh the AUs.

        The AU targets come first: a different list is named as such, not as another number of
        classes. With ``pos_weight: balanced``, the weights from the training fold's targets.
        """
        check_au_targets(self, self.trainer)
        super().setup(stage)  # type: ignore[misc]
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.pos_weight_mode == "balanced" and dm is not None:
            targets = dm.au_targets()[dm.train_index]
            self.pos_weight.copy_(balanced_pos_weight(targets).to(self.pos_weight))

    def cross_entropy(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """The label loss of a detector: binary cross-entropy per AU.

        Logits (B, A) against ``batch["aus"]`` (B, A), positive terms weighted by
        ``pos_weight``.
        """
        return au_bce(logits, batch["aus"], self.pos_weight.to(logits.dtype))

    def metric_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """The multi-hot ``aus`` (B, A), as the metrics compare them."""
        return batch["aus"].long()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Returns ``index`` (B,), ``probs`` (B, A) sigmoid per AU and ``pred`` (B, A) 0/1.

        ``pred`` is ``probs >= threshold``; all on the CPU.
        """
        probs = self.logits(batch).float().sigmoid()  # type: ignore[attr-defined]
        pred = (probs >= self.threshold).long()
        return {"index": batch["index"].cpu(), "probs": probs.cpu(), "pred": pred.cpu()}


class MoExtAUTask(AUDetection, MoExtClassifyTask):
    """MoExt's classifier detecting AUs from the motion M.

    The classifier's separator and motion extractor are pretrained.

    Batches: ``onset``, ``apex`` (B, 3, H, W), ``aus`` (B, A), ``index`` (B,).

    Args:
        net: the MoExt architecture, as for :class:`~moext.tasks.MoExtClassifyTask`.
        pretrained: path of a MoExt pretraining checkpoint, as for ``MoExtClassifyTask``.
        lr: Adam learning rate, as for ``MoExtClassifyTask``.
        weight_decay: Adam weight decay, as for ``MoExtClassifyTask``.
        channels_last: NHWC memory format, as for ``MoExtClassifyTask``.
        compile: ``torch.compile`` the feature separator, as for ``MoExtClassifyTask``.
        dropout: dropout before the linear layer, as for ``MoExtClassifyTask``.
        aus: the AU numbers detected, in target order (default :data:`DEFAULT_AUS`); the
            DataModule's ``aus`` must be the same.
        threshold: probability from which an AU is predicted present.
        pos_weight: ``none`` or ``balanced`` (each AU's positives weighted n_neg / n_pos in the
            training fold, :func:`moext.losses.au.balanced_pos_weight`).
    """

    def __init__(
        self,
        net: MoExtConfig | None = None,
        aus: list[int] | None = None,
        pretrained: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = False,
        compile: bool = False,
        dropout: float = 0.0,
        threshold: float = 0.5,
        pos_weight: PosWeight = "none",
    ) -> None:
        aus = detected_aus(aus)
        super().__init__(
            net, len(aus), pretrained, lr, weight_decay, channels_last, compile, dropout
        )
        self.init_detection(aus, threshold, pos_weight)


class SRMCLAUTask(AUDetection, SRMCLClassifyTask):
    """SRMCL's classifier detecting AUs from its ViT features.

    Trained with BCE per AU + ``weight_sr`` L_SR (the self-expression reconstruction of the
    masked rounds; the prototype contrastive loss needs classes and is off).

    Batches: ``flow`` (B, C, H, W), ``aus`` (B, A), ``index`` (B,).

    Args:
        net: the architecture, as for :class:`~moext.tasks.SRMCLClassifyTask`.
        pretrained: path of an SRMCL pretraining checkpoint, as for ``SRMCLClassifyTask``.
        mask_ratio: share of the patch positions masked per round, as for ``SRMCLClassifyTask``.
        mask_rounds: cascaded masking rounds, as for ``SRMCLClassifyTask``.
        mask_site: ``tokens`` or ``patches``, as for ``SRMCLClassifyTask``.
        weight_sr: w_sr, weight of L_SR, as for ``SRMCLClassifyTask``.
        lr: AdamW learning rate, as for ``SRMCLClassifyTask``.
        weight_decay: AdamW weight decay, as for ``SRMCLClassifyTask``.
        lr_schedule: ``cosine`` or ``constant``, per step, as for ``SRMCLClassifyTask``.
        warmup_epochs: epochs of linear learning-rate warm-up, as for ``SRMCLClassifyTask``.
        aus: the AU numbers detected, as for :class:`MoExtAUTask`.
        threshold: probability from which an AU is predicted present, as for ``MoExtAUTask``.
        pos_weight: ``none`` or ``balanced``, as for ``MoExtAUTask``.
    """

    def __init__(
        self,
        net: SRMCLConfig | None = None,
        aus: list[int] | None = None,
        pretrained: str | None = None,
        mask_ratio: float = 0.75,
        mask_rounds: int = 2,
        mask_site: MaskSite = "tokens",
        weight_sr: float = 0.5,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        lr_schedule: LrSchedule = "cosine",
        warmup_epochs: float = 0.0,
        threshold: float = 0.5,
        pos_weight: PosWeight = "none",
    ) -> None:
        aus = detected_aus(aus)
        super().__init__(
            net,
            len(aus),
            pretrained,
            mask_ratio,
            mask_rounds,
            mask_site,
            weight_sr,
            weight_pmcl=0.0,
            memory_init="none",
            lr=lr,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs,
        )
        self.init_detection(aus, threshold, pos_weight, weight_pmcl=0.0, memory_init="none")


class STSTNetAUTask(AUDetection, STSTNetClassifyTask):
    """STSTNet detecting AUs from the onset -> apex flow image.

    A baseline's detector: the few lines every further method's takes.

    Batches: ``flow`` (B, 3, S, S), ``aus`` (B, A), ``index`` (B,).

    Args:
        net: the architecture, as for :class:`~moext.tasks.STSTNetClassifyTask`.
        lr: Adam learning rate, as for ``STSTNetClassifyTask``.
        weight_decay: L2 on every parameter, as for ``STSTNetClassifyTask``.
        aus: the AU numbers detected, as for :class:`MoExtAUTask`.
        threshold: probability from which an AU is predicted present, as for ``MoExtAUTask``.
        pos_weight: ``none`` or ``balanced``, as for ``MoExtAUTask``.
    """

    def __init__(
        self,
        net: STSTNetConfig | None = None,
        aus: list[int] | None = None,
        lr: float = 5e-5,
        weight_decay: float = 1e-4,
        threshold: float = 0.5,
        pos_weight: PosWeight = "none",
    ) -> None:
        aus = detected_aus(aus)
        super().__init__(net, len(aus), lr, weight_decay)
        self.init_detection(aus, threshold, pos_weight)
