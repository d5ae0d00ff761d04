"""``moext loso --launcher slurm``: folds as submitit jobs, a pretraining job first, a killed job
resubmitted without redoing finished folds, ``--status``; sbatch files checked without a cluster.

The first test runs real job processes through submitit's local executor (``--cluster local``),
on the tiny test experiment of ``tests/test_loso.py``. The second puts a fake ``srun`` /
``sbatch`` / ``sacct`` on the PATH: submitit writes and "submits" the sbatch files as on a
cluster, nothing runs, and ``--status`` reads the states the fake sacct reports.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from moext.experiment import loso, slurm
from moext.experiment.settings import SlurmSettings, read_settings
from tests.test_loso import experiment  # noqa: F401  (the fixture)

FOLDS = ["synth/sub01", "synth/sub02", "synth/sub03"]
LOCAL = ["--launcher", "slurm", "--cluster", "local", "--gpus-per-job", "0"]


def wait_until(condition, what: str, timeout_s: float = 240.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_local_jobs_pretrain_first_resume_a_killed_job_and_pool(experiment, capsys, monkeypatch):  # noqa: F811
    cfg, run_dir = experiment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job processes: tiny folds need no threads
    cfg.write_text(cfg.read_text().replace("wandb: offline", "wandb: disabled"))  # saves ~1/3
    folds_dir, jobs_dir = run_dir / "folds", run_dir / "slurm"
    # 1) one pretraining job (waited for: the local executor has no dependencies), then one job
    #    holding all three folds, not waited for
    assert loso.main(["--config", str(cfg), *LOCAL, "--folds-per-job", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 folds: 0 done, 0 running, 0 queued, 0 failed, 3 not started" in out
    assert "submitted the pretraining job" in out and "submitted 3 fold(s) as 1 job(s)" in out
    pre, job = slurm.read_jobs(jobs_dir)
    assert (pre["kind"], pre["folds"]) == ("pretrain", []) and job["folds"] == FOLDS
    assert (run_dir / "pretrain" / "pretrained.ckpt").is_file()
    try:
        # 2) kill the job's process inside its second fold, as a node failure would
        wait_until(
            lambda: (
                (folds_dir / "synth__sub01" / "predictions.csv").is_file()
                and (folds_dir / "synth__sub02" / "csv").is_dir()
            ),
            f"fold 2 of job {job['job_id']} (log {slurm.log_path(job)})",
        )
        settings = read_settings(cfg)
        live = slurm.status(settings, run_dir, FOLDS, loso.fold_dirname)
        assert [f.state for f in live.folds][1:] == ["running", "queued"]
        assert live.pretrain.startswith("done")
        [task] = children(int(job["job_id"]))
        os.kill(task, signal.SIGKILL)
        wait_until(lambda: slurm.job_states([job]) != ["RUNNING"], "the killed job to end")
    finally:  # never leave a job process behind a failing test
        for task in children(int(job["job_id"])):
            os.kill(task, signal.SIGKILL)
    assert slurm.job_states([pre, job]) == ["COMPLETED", "KILLED"]
    assert not (folds_dir / "synth__sub02" / "predictions.csv").exists()
    sub01 = os.path.getmtime(folds_dir / "synth__sub01" / "predictions.csv")

    # 3) --status: the finished fold, the killed job's two others, where its log is
    assert loso.main(["--config", str(cfg), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pretraining: done")
    assert lines[1].split() == ["synth/sub01", "done", "job", job["job_id"], "(KILLED)"]
    assert lines[2].split() == ["synth/sub02", "failed", "job", job["job_id"], "(KILLED)"]
    assert lines[3].split()[:2] == ["synth/sub03", "failed"]
    assert "3 folds: 1 done, 0 running, 0 queued, 2 failed, 0 not started" in lines
    assert any(line.startswith(f"log of job {job['job_id']}: ") for line in lines)

    # 4) submitted again: only the two unfinished folds; no second pretraining; --wait waits
    #    for the job and pools
    assert loso.main(["--config", str(cfg), *LOCAL, "--folds-per-job", "2", "--wait"]) == 0
    out = capsys.readouterr().out
    records = slurm.read_jobs(jobs_dir)
    assert [r["folds"] for r in records[2:]] == [["synth/sub02", "synth/sub03"]]
    assert [r["kind"] for r in records].count("pretrain") == 1
    assert os.path.getmtime(folds_dir / "synth__sub01" / "predictions.csv") == sub01  # kept
    # the killed fold's leftovers were cleared before it ran again: one CSV log
    assert [p.name for p in (folds_dir / "synth__sub02" / "csv").iterdir()] == ["version_0"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] and results["folds_done"] == 3 and results["overall"]["n"] == 18
    assert "**all (pooled)** | 18" in out and "3 folds: 3 done" in out
    assert loso.main(["--config", str(cfg), "--status"]) == 0
    assert "every fold is done" in capsys.readouterr().out


FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/next" 2>/dev/null || echo 1001)
echo $((n + 1)) > "$FAKE_SLURM/next"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/sacct" 2>/dev/null
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``srun``, ``sbatch`` and ``sacct`` stand-ins on the PATH; returns their state folder
    (write ``sacct`` there: the lines the fake sacct prints after its header)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "fake_slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in {"srun": "#!/bin/sh\n", "sbatch": FAKE_SBATCH, "sacct": FAKE_SACCT}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def test_sbatch_files_dependency_and_status_without_a_cluster(experiment, fake_slurm, capsys):  # noqa: F811
    cfg, run_dir = experiment
    config = yaml.safe_load(cfg.read_text())
    config["loso"]["slurm"] = {
        "partition": "a100",
        "time": "0-02:00:00",
        "gpus_per_job": 2,
        "folds_per_job": 2,
        "array_parallelism": 1,
        "setup": ["module load cuda/12.4"],
        "additional_parameters": {"account": "lab"},
    }
    cfg.write_text(yaml.safe_dump(config))
    # the command line wins over the config's partition; --sbatch adds an option
    argv = ["--config", str(cfg), "--launcher", "slurm", "--partition", "h100", "--sbatch", "qos=high"]  # fmt: skip
    assert loso.main(argv) == 0
    records = slurm.read_jobs(run_dir / "slurm")
    assert [(r["job_id"], r["kind"], r["folds"]) for r in records] == [
        ("1001", "pretrain", []),
        ("1002_0", "folds", FOLDS[:2]),
        ("1002_1", "folds", FOLDS[2:]),
    ]
    logs = run_dir / "slurm" / "logs"
    pre, array = ((logs / f"{i}_submission.sh").read_text() for i in (1001, 1002))
    for line in ["--partition=h100", "--time=120", "--account=lab", "--qos=high"]:
        assert f"#SBATCH {line}\n" in pre and f"#SBATCH {line}\n" in array
    assert "#SBATCH --gpus-per-node=1\n" in pre and "--dependency" not in pre
    assert "#SBATCH --gpus-per-node=2\n" in array
    assert "#SBATCH --array=0-1%1\n" in array  # two fold jobs, one at a time
    assert "#SBATCH --dependency=afterok:1001\n" in array
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in array
    assert "module load cuda/12.4\n" in array and "#SBATCH --signal=USR2@90\n" in array
    assert not (run_dir / "folds").exists()  # nothing ran here

    # while SLURM says they wait, --status says so and a second launch submits nothing
    (fake_slurm / "sacct").write_text("1001|RUNNING|node1\n1002_[0-1%1]|PENDING|\n")
    capsys.readouterr()
    assert loso.main(["--config", str(cfg), "--status"]) == 0
    out = capsys.readouterr().out
    assert "pretraining: running (job 1001, RUNNING)" in out
    assert "3 folds: 0 done, 0 running, 3 queued, 0 failed, 0 not started" in out
    assert loso.main(argv) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert len(slurm.read_jobs(run_dir / "slurm")) == 3

    # pretraining failed and the folds were dropped: everything is submitted again
    (fake_slurm / "sacct").write_text(
        "1001|FAILED|node1\n1002_0|CANCELLED by 0|\n1002_1|CANCELLED by 0|\n"
    )
    assert loso.main(argv) == 0
    assert "3 failed" in capsys.readouterr().out
    new = slurm.read_jobs(run_dir / "slurm")[3:]
    assert [(r["job_id"], r["kind"]) for r in new] == [
        ("1003", "pretrain"),
        ("1004_0", "folds"),
        ("1004_1", "folds"),
    ]
    assert "#SBATCH --dependency=afterok:1003\n" in (logs / "1004_submission.sh").read_text()


def test_slurm_settings_and_command_line_options():
    assert [slurm.minutes(t) for t in (90, "90", "1:30", "2:00:00", "1-0", "1-02:30", "0:0:1")] == [
        90, 90, 2, 120, 1440, 1590, 1,
    ]  # fmt: skip
    for bad in ("soon", "1:2:3:4", 0, "-5"):
        with pytest.raises(ValueError, match="time limit"):
            slurm.minutes(bad)
    s = SlurmSettings(gpus_per_job=4, additional_parameters={"qos": "low"})
    assert (slurm.workers_per_job(s), slurm.folds_per_job(s)) == (4, 4)
    p = __import__("argparse").ArgumentParser()
    slurm.add_arguments(p)
    a = p.parse_args(["--folds-per-job", "8", "--time", "3:00:00", "--sbatch", "qos=high"])
    s = slurm.with_options(s, a)
    assert (s.folds_per_job, s.time, s.additional_parameters) == (8, "3:00:00", {"qos": "high"})
    assert slurm.folds_per_job(s) == 8 and s.gpus_per_job == 4
    params = slurm.executor_parameters(s, "folds", "cde3", dependency="77")
    assert params["timeout_min"] == 180 and params["gpus_per_node"] == 4
    assert params["slurm_dependency"] == "afterok:77"
    pre = slurm.executor_parameters(
        SlurmSettings(pretrain_gpus=2, pretrain_time=30), "pretrain", "x"
    )
    assert (pre["timeout_min"], pre["tasks_per_node"], pre["gpus_per_node"]) == (30, 2, 2)
    cpu = slurm.executor_parameters(SlurmSettings(gpus_per_job=0, cluster="local"), "folds", "x")
    assert "gpus_per_node" not in cpu and "slurm_dependency" not in cpu


def test_launcher_slurm_without_slurm_is_one_line_and_writes_nothing(
    experiment,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Fault 6: submitit's "Could not detect srun" traceback, and a stray run folder."""
    cfg, run_dir = experiment
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no srun, as on a workstation
    assert loso.main(["--config", str(cfg), "--launcher", "slurm"]) == 2
    assert capsys.readouterr().err == (
        "moext loso: error: --launcher slurm: no SLURM on this machine (no srun on the PATH); "
        f"run the folds here with `moext loso --config {cfg}` (add --workers N for folds side by "
        "side), or try the cluster jobs as local processes with `--launcher slurm --cluster local`\n"
    )
    assert not run_dir.exists()
