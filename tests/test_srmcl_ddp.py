"""SRMCL's prototype memory under DDP: two CPU processes (gloo) hold the same prototypes.

Each rank trains on its own half of the data, so a memory updated with the rank's own features
only would differ between the ranks after the last batch; the task gathers every rank's
features and labels before each update and reduces the epoch's class sums over the ranks.
"""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from moext.nn.srmcl import SRMCLConfig
from moext.tasks import SRMCLClassifyTask
from tests.test_srmcl_tasks import RandomFlows


class SavePrototypes(L.Callback):
    """Writes each rank's prototypes (and those at the start of its last batch) to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, module) -> None:
        torch.save(module.net.memory.prototypes.cpu(), self.out / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_hold_the_same_prototypes(tmp_path):
    torch.manual_seed(0)
    task = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3, lr=1e-3)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[SavePrototypes(tmp_path)],
    )
    trainer.fit(task, DataLoader(RandomFlows(n=16), batch_size=4, shuffle=True))
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert p0.any() and torch.allclose(p0.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(p0, p1, rtol=0, atol=1e-6)
