"""The part of a classifier that every network on flow images shares.

Shared by STSTNet, OFF-ApexNet and RCN-A: it reads the ``flow`` the flow DataModule serves and
checks, before the first step, that the data's channels and size are the network's.

A method subclasses :class:`FlowImageClassifyTask`, gives its init arguments their defaults and
hands them to ``super().__init__``, implements :meth:`build_net` (a network whose ``cfg`` has
``in_channels`` and ``image_size``: :func:`~moext.tasks.data_checks.check_data` compares both
with what the DataModule serves before the first step), and overrides ``configure_optimizers``
if it does not train with the base's Adam.
"""

from __future__ import annotations

from torch import Tensor

from moext.tasks.base import ClassificationTask


class FlowImageClassifyTask(ClassificationTask):
    """A classifier of flow images: ``flow`` (B, C, S, S) float in [0, 1] -> logits.

    Batches (:class:`moext.data.FlowDataModule`): ``flow``, ``label`` (B,), ``index`` (B,).
    """

    inputs = "flow"

    def forward(self, flow: Tensor) -> Tensor:
        """(B, C, S, S) -> logits (B, num_classes)."""
        return self.net(flow)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the batch's ``flow``."""
        return self(batch["flow"])
