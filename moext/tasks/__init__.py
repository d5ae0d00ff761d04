"""LightningModules: the stages' bases (:mod:`moext.tasks.base`) and one file per method's stage(s).

Configs name a task by class path (``model.class_path: moext.tasks.MoExtClassifyTask``). Each
method adds one line below. ``PretrainTask`` / ``ClassifyTask`` are the names MoExt's tasks had
before other methods joined; configs and checkpoints that use them keep working.
"""

from moext.tasks.akmnet import AKMNetClassifyTask
from moext.tasks.au import MoExtAUTask, SRMCLAUTask, STSTNetAUTask
from moext.tasks.base import BaseTask, ClassificationTask, PretrainingTask
from moext.tasks.htnet import HTNetClassifyTask
from moext.tasks.moext_classify import MoExtClassifyTask
from moext.tasks.moext_pretrain import MoExtPretrainTask
from moext.tasks.offapexnet import OffApexNetClassifyTask
from moext.tasks.rcn import RCNClassifyTask
from moext.tasks.srmcl_classify import SRMCLClassifyTask
from moext.tasks.srmcl_pretrain import SRMCLPretrainTask
from moext.tasks.ststnet import STSTNetClassifyTask

PretrainTask = MoExtPretrainTask
ClassifyTask = MoExtClassifyTask

__all__ = [
    "AKMNetClassifyTask",
    "BaseTask",
    "ClassificationTask",
    "ClassifyTask",
    "HTNetClassifyTask",
    "MoExtAUTask",
    "MoExtClassifyTask",
    "MoExtPretrainTask",
    "OffApexNetClassifyTask",
    "PretrainTask",
    "PretrainingTask",
    "RCNClassifyTask",
    "SRMCLAUTask",
    "SRMCLClassifyTask",
    "SRMCLPretrainTask",
    "STSTNetAUTask",
    "STSTNetClassifyTask",
]
