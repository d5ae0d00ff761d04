"""HTNet's classifier: cross-entropy on flow images, Adam with the authors' settings.

The authors' ``main_HTNet.py`` trains a fresh HTNet per held-out subject with plain
cross-entropy and ``Adam(lr=5e-5)`` (no weight decay, no schedule), batches of 256, for 800
epochs (``main_HTNet.py:161-171, 222-268``): all of it is the shared base's training, so this
task only builds the network and checks that the data fits it. The authors keep, per subject,
the predictions of the epoch with the best accuracy on that very subject
(``main_HTNet.py:293-301``); moext evaluates the last epoch (``docs/methods/htnet.md``).
"""

from __future__ import annotations

from moext.nn.htnet import HTNet, HTNetConfig
from moext.tasks.checkpoints import allow_in_checkpoints
from moext.tasks.flow_images import FlowImageClassifyTask

allow_in_checkpoints(HTNetConfig)


class HTNetClassifyTask(FlowImageClassifyTask):
    """HTNet trained from scratch with cross-entropy.

    Batches (:class:`moext.data.FlowDataModule`): ``flow`` (B, C, H, W) float in [0, 1],
    ``label`` (B,), ``index`` (B,). C and H = W must be the network's ``in_channels`` and
    ``image_size`` (checked before the first step).

    Args:
        net: the architecture (:class:`~moext.nn.htnet.HTNetConfig`; default the authors').
        num_classes: classes of the protocol (3 on CDE and CAS(ME)^3).
        lr: Adam learning rate (code 5e-5).
        weight_decay: Adam weight decay (code 0).
        label_smoothing: cross-entropy label smoothing (code: none).
    """

    def __init__(
        self,
        net: HTNetConfig | None = None,
        num_classes: int = 3,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net or HTNetConfig(), num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: HTNetConfig) -> HTNet:
        """An :class:`~moext.nn.htnet.HTNet` with ``num_classes`` outputs."""
        return HTNet(net, self.hparams.num_classes)
