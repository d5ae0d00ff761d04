"""The two LightningModules: MoExt pretraining and classification (objective learning)."""

from moext.tasks.moext_classify import ClassifyTask
from moext.tasks.moext_pretrain import PretrainTask

__all__ = ["ClassifyTask", "PretrainTask"]
