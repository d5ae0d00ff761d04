"""The part of a classifier that every network on flow images shares (STSTNet, OFF-ApexNet,
RCN-A): it reads the ``flow`` the flow DataModule serves and checks, before the first step, that
the data's channels and size are the network's.

A method subclasses :class:`FlowImageClassifyTask`, builds ``self.net`` (a network whose ``cfg``
has ``in_channels`` and ``image_size``) in its ``__init__`` with its own defaults, and overrides
``configure_optimizers`` if it does not train with the base's Adam.
"""

from __future__ import annotations

from torch import Tensor

from moext.tasks.base import ClassificationTask
from moext.tasks.srmcl_pretrain import check_flow_data


class FlowImageClassifyTask(ClassificationTask):
    """A classifier of flow images: ``flow`` (B, C, S, S) float in [0, 1] -> logits.

    Batches (:class:`moext.data.FlowDataModule`): ``flow``, ``label`` (B,), ``index`` (B,).
    """

    inputs = "flow"

    def setup(self, stage: str) -> None:
        check_flow_data(self.net.cfg, self.trainer)
        super().setup(stage)

    def forward(self, flow: Tensor) -> Tensor:
        """(B, C, S, S) -> logits (B, num_classes)."""
        return self.net(flow)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch["flow"])
