"""The two LightningModules: MoExt pretraining and classification (objective learning)."""

from moext.tasks.classify import ClassifyTask
from moext.tasks.pretrain import PretrainTask

__all__ = ["ClassifyTask", "PretrainTask"]
