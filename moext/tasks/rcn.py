"""RCN-A's classifier: cross-entropy on a 3-channel onset -> apex flow image.

SGD with momentum at a constant learning rate (the authors' ``ModelTrain_Final.py``).

The code builds a ``StepLR(step_size=10, gamma=0.5)`` but never steps it
(``ModelTrain_Final.py:32``), so its learning rate stays constant; ours too. Each LOSO fold trains
a fresh network for a fixed number of epochs and the last epoch classifies the held-out subject
(``ModelTrain_Final.py:151-213``). docs/methods/rcn.md lists every setting and its source.
"""

from __future__ import annotations

import torch

from moext.nn.rcn import RCN, RCNConfig
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.flow_images import FlowImageClassifyTask

allow_in_checkpoints(RCNConfig)


class RCNClassifyTask(FlowImageClassifyTask):
    """RCN-A (``net.attention: true``) or the plain RCN, trained with cross-entropy.

    Batches (:class:`moext.data.FlowDataModule`): ``flow`` (B, 3, S, S) float in [0, 1],
    ``label`` (B,), ``index`` (B,).

    Args:
        net: the architecture (:class:`~moext.nn.rcn.RCNConfig`; default RCN-A).
        num_classes: classes of the protocol (the code: 3).
        lr: SGD learning rate (``ModelTrain_Final.py:18``: 5e-4).
        momentum: SGD momentum (``ModelTrain_Final.py:174``: 0.9).
        weight_decay: SGD weight decay (the code: none).
        label_smoothing: cross-entropy label smoothing (the code: none).
    """

    method_name = "RCN-A"

    def __init__(
        self,
        net: RCNConfig | None = None,
        num_classes: int = 3,
        lr: float = 5e-4,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(net or RCNConfig(), num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: RCNConfig) -> RCN:
        """An :class:`~moext.nn.rcn.RCN` with ``num_classes`` outputs."""
        return RCN(net, self.hparams.num_classes)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with momentum on every parameter, constant learning rate (the code's)."""
        hp = self.hparams
        return torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
