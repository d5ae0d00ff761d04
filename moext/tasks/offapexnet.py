"""OFF-ApexNet's classifier: cross-entropy on the onset -> apex u and v flow images, Adam.

No authors' code is public: the optimiser and its settings are ours (docs/methods/offapexnet.md).
Each LOSO fold trains from scratch for a fixed number of epochs and the last epoch is evaluated.
"""

from __future__ import annotations

from moext.nn.offapexnet import OffApexNet, OffApexNetConfig
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.flow_images import FlowImageClassifyTask

allow_in_checkpoints(OffApexNetConfig)


class OffApexNetClassifyTask(FlowImageClassifyTask):
    """OFF-ApexNet trained with cross-entropy.

    Batches (:class:`moext.data.FlowDataModule` with ``channels: [u, v]``): ``flow`` (B, 2, S, S)
    float in [0, 1], ``label`` (B,), ``index`` (B,).

    Args:
        net: the architecture (:class:`~moext.nn.offapexnet.OffApexNetConfig`).
        num_classes: classes of the protocol (the paper: 3).
        lr: Adam learning rate (ours: 1e-4).
        weight_decay: Adam weight decay (ours: none).
        label_smoothing: cross-entropy label smoothing (ours: none).
    """

    method_name = "OFF-ApexNet"

    def __init__(
        self,
        net: OffApexNetConfig | None = None,
        num_classes: int = 3,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net or OffApexNetConfig(), num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: OffApexNetConfig) -> OffApexNet:
        """An :class:`~moext.nn.offapexnet.OffApexNet` with ``num_classes`` outputs."""
        return OffApexNet(net, self.hparams.num_classes)
