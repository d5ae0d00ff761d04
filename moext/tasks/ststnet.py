"""STSTNet's classifier: cross-entropy on the onset -> apex flow images, Adam (paper Sec. II).

The authors train each LOSO fold from scratch for a fixed number of epochs and classify the
held-out subject with the last epoch's weights (``main.m``, ``main.py:163-219``); so does the LOSO
runner. docs/methods/ststnet.md lists every setting and its source.
"""

from __future__ import annotations

from moext.nn.ststnet import STSTNet, STSTNetConfig
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.flow_images import FlowImageClassifyTask

allow_in_checkpoints(STSTNetConfig)


class STSTNetClassifyTask(FlowImageClassifyTask):
    """STSTNet trained with cross-entropy.

    Batches (:class:`moext.data.FlowDataModule`): ``flow`` (B, 3, S, S) float in [0, 1] (the
    paper: u, v, optical strain at 28 x 28), ``label`` (B,), ``index`` (B,).

    Args:
        net: the architecture (:class:`~moext.nn.ststnet.STSTNetConfig`).
        num_classes: classes of the protocol (the paper: 3).
        lr: Adam learning rate (paper / ``main.m`` / ``main.py:88``: 5e-5).
        weight_decay: L2 on every parameter (``main.m``: MATLAB's default L2 regularisation
            1e-4, on the weights only; the PyTorch port ``main.py``: none).
        label_smoothing: cross-entropy label smoothing (the authors: none).
    """

    def __init__(
        self,
        net: STSTNetConfig | None = None,
        num_classes: int = 3,
        lr: float = 5e-5,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net or STSTNetConfig(), num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: STSTNetConfig) -> STSTNet:
        """An :class:`~moext.nn.ststnet.STSTNet` with ``num_classes`` outputs."""
        return STSTNet(net, self.hparams.num_classes)
