"""LOSO on a cluster: SLURM jobs through submitit, and where every fold stands.

``moext loso --config X --launcher slurm`` submits the folds as SLURM jobs through submitit;
``moext loso --config X --status`` says where every fold stands.

How a run is spread (settings: the config's ``loso.slurm:`` section,
:class:`~moext.experiment.settings.SlurmSettings`, or the command line, which wins):

1. The submitting command checks that this machine can submit (``srun`` on the PATH, as
   submitit asks; ``--cluster local`` needs nothing), then lists the folds and records (or
   checks) the run folder's ``experiment.json`` as every LOSO run does, so a changed
   configuration is refused before anything is queued, and nothing is written where no job
   can be submitted.
2. A shared pretraining stage whose checkpoint is missing is one job, and the fold jobs depend
   on it (``--dependency=afterok:<id>``, with ``--kill-on-invalid-dep=yes`` so that they are
   dropped, not left pending, when it fails). submitit's local executor has no dependencies:
   there the submitting command waits for the pretraining job, then submits the fold jobs.
   With ``pretrain_per_fold`` there is no pretraining job: each fold job pretrains its folds.
3. The folds still to do (no predictions, and no queued or running job holding them) are cut
   into groups of ``folds_per_job``; each group is one task of one SLURM array (at most
   ``array_parallelism`` running at once) that runs :func:`moext.experiment.loso.run` on its
   folds with ``skip_report`` (one after the other), or with ``workers_per_job`` > 1
   :func:`moext.experiment.loso.run_parallel` (one process per GPU of the job, cycling).
4. Every job is recorded in ``<folder>/jobs.json`` (written atomically): id, kind, folds,
   submission time, and submitit's files and logs go to ``<folder>/logs/``. Running the command again submits only the folds that are neither
   done nor held by a queued / running job (so a killed or failed job's folds are redone and
   finished folds never are); ``--report`` pools; ``--wait`` waits for the jobs, then pools.

A job that reaches its time limit gets SIGUSR2 90 s before (submitit's ``--signal``); its
callable is a :class:`submitit.helpers.Checkpointable`, so submitit requeues it with the same
folds and the finished ones are skipped (the interrupted fold restarts from scratch: the runner
keeps no state inside a fold).

This module does not import :mod:`moext.experiment.loso` (whose ``main`` dispatches here, and
the layers allow no import cycle): the runner's functions come in as :class:`LosoSteps`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths, pickle_load
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmInfoWatcher

from moext.experiment.definition import Experiment, open_experiment
from moext.experiment.processes import interrupted_when, process_alive
from moext.experiment.results import PREDICTIONS, atomic_write_text
from moext.experiment.run_folder import read_experiment
from moext.experiment.settings import LosoSettings, SlurmSettings

JOBS_FILE = "jobs.json"

#: Scheduler states of a job that may still run (SLURM's names; the local executor's RUNNING).
ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "COMPLETING",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
}

#: Fold states that ``--launcher slurm`` submits (again); ``unknown`` is not one of them.
TO_SUBMIT = ("failed", "not started", "unfinished")


@dataclass(frozen=True)
class LosoSteps:
    """The LOSO runner's functions that a launch and its jobs call.

    :mod:`moext.experiment.loso` hands them over; module-level functions, so they pickle by
    reference into the jobs.

    Attributes:
        start: ``(experiment) -> (folds, classes)``; checks the stages and records or checks
            the run folder's ``experiment.json``.
        run: :func:`moext.experiment.loso.run`.
        run_parallel: :func:`moext.experiment.loso.run_parallel`.
        fold_dirname: ``"casme2/sub01"`` -> ``"casme2__sub01"``.
    """

    start: Callable[[Experiment], tuple[list[str], tuple[str, ...]]]
    run: Callable[..., Any]
    run_parallel: Callable[..., int]
    fold_dirname: Callable[[str], str]


# ---------------------------------------------------------------- settings and job parameters


def minutes(limit: int | str) -> int:
    """A time limit in whole minutes.

    An int (minutes), or SLURM's ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS`` (seconds round up).

    Raises:
        ValueError: not one of those forms.
    """
    if isinstance(limit, int):
        if limit <= 0:
            raise ValueError(f"time limit {limit}: must be positive")
        return limit
    text = str(limit).strip()
    try:
        days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
        parts = [int(p) for p in rest.split(":")]
        if "-" in text:  # D-HH, D-HH:MM, D-HH:MM:SS
            h, m, s = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            h, m, s = parts
        else:  # MM or MM:SS
            h, m, s = 0, parts[0], parts[1] if len(parts) == 2 else 0
        if len(parts) > 3 or min(h, m, s, int(days)) < 0:
            raise ValueError
        total = int(days) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise ValueError(
            f"time limit {limit!r}: expected minutes or [D-]HH:MM[:SS] (SLURM's forms)"
        ) from None
    if total <= 0:
        raise ValueError(f"time limit {limit!r}: must be positive")
    return total


def workers_per_job(s: SlurmSettings) -> int:
    """Fold processes side by side in a fold job (default: one per GPU, at least one)."""
    return max(1, s.workers_per_job or s.gpus_per_job)


def folds_per_job(s: SlurmSettings) -> int:
    """Folds one fold job trains (default: one per worker)."""
    return max(1, s.folds_per_job or workers_per_job(s))


def executor_parameters(
    s: SlurmSettings, kind: str, name: str, dependency: str | None = None
) -> dict[str, Any]:
    """The ``submitit.AutoExecutor.update_parameters`` of a ``"pretrain"`` or ``"folds"`` job.

    Generic keys (time, GPUs, CPUs, memory) reach either executor; ``slurm_*`` keys only sbatch.
    A pretraining job on more than one GPU runs one SLURM task per GPU (a DDP rank each).
    """
    pretrain = kind == "pretrain"
    gpus = s.pretrain_gpus if pretrain else s.gpus_per_job
    limit = s.pretrain_time if pretrain and s.pretrain_time is not None else s.time
    extra = {"kill-on-invalid-dep": "yes"} if dependency else {}
    params: dict[str, Any] = {
        "name": f"{name}-{kind}",
        "timeout_min": minutes(limit),
        "nodes": 1,
        "tasks_per_node": gpus if pretrain and gpus > 1 and s.cluster == "slurm" else 1,
        "gpus_per_node": gpus if gpus > 0 else None,
        "cpus_per_task": s.cpus_per_task,
        "mem_gb": s.mem_gb,
        "slurm_partition": s.partition,
        "slurm_array_parallelism": s.array_parallelism,
        "slurm_setup": list(s.setup) or None,
        "slurm_dependency": f"afterok:{dependency}" if dependency else None,
        "slurm_additional_parameters": {**extra, **s.additional_parameters} or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(
    folder: Path, s: SlurmSettings, kind: str, name: str, dependency: str | None = None
) -> submitit.AutoExecutor:
    """A submitit executor for one kind of job; its files (pickles, logs) go to ``folder/logs``."""
    executor = submitit.AutoExecutor(folder=folder / "logs", cluster=s.cluster)
    executor.update_parameters(**executor_parameters(s, kind, name, dependency))
    return executor


def job_folder(settings: LosoSettings, run_dir: Path) -> Path:
    """Where the job files, logs and ``jobs.json`` of an experiment go (absolute)."""
    return Path(settings.slurm.folder or run_dir / "slurm").expanduser().resolve()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--launcher slurm`` options of ``moext loso``; each overrides ``loso.slurm:``."""
    g = parser.add_argument_group(
        "cluster jobs (--launcher slurm; defaults: the config's loso.slurm: section)"
    )
    g.add_argument(
        "--cluster",
        choices=["slurm", "local"],
        help="slurm: sbatch; local: the jobs are processes of this machine (submitit's local executor)",
    )
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time", help="time limit per fold job: minutes or [D-]HH:MM[:SS]")
    g.add_argument("--gpus-per-job", type=int, help="GPUs of a fold job (0: CPU)")
    g.add_argument("--folds-per-job", type=int, help="folds one job trains")
    g.add_argument(
        "--workers-per-job", type=int, help="fold processes side by side in a job (default: GPUs)"
    )
    g.add_argument("--array-parallelism", type=int, help="most fold jobs running at once")
    g.add_argument(
        "--sbatch",
        action="append",
        metavar="KEY=VALUE",
        help="another sbatch option, repeatable (e.g. --sbatch account=lab --sbatch qos=high)",
    )
    g.add_argument(
        "--wait", action="store_true", help="wait for the submitted jobs, then pool the results"
    )


def with_options(s: SlurmSettings, a: argparse.Namespace) -> SlurmSettings:
    """The config's ``loso.slurm:`` settings with the command line's options on top."""
    keys = (
        "cluster",
        "partition",
        "time",
        "gpus_per_job",
        "folds_per_job",
        "workers_per_job",
        "array_parallelism",
    )
    changes: dict[str, Any] = {k: getattr(a, k) for k in keys if getattr(a, k, None) is not None}
    if getattr(a, "sbatch", None):
        extra = dict(s.additional_parameters)
        for item in a.sbatch:
            key, sep, value = item.partition("=")
            if not key:
                raise ValueError(f"--sbatch {item!r}: expected KEY=VALUE (or KEY for a flag)")
            extra[key] = value if sep else True
        changes["additional_parameters"] = extra
    out = dataclasses.replace(s, **changes)
    minutes(out.time)  # a bad limit is an error now, not in a queued job
    return out


# ---------------------------------------------------------------- the job


class LosoJob(Checkpointable):
    """What one job runs: the shared pretraining stage (``folds`` empty), or a group of folds.

    A :class:`~submitit.helpers.Checkpointable`: at its time limit (or a requeueing signal)
    submitit resubmits it with the same arguments, and the folds finished meanwhile are skipped.

    Returns:
        The folds it trained (empty for the pretraining job).
    """

    def __call__(
        self,
        steps: LosoSteps,
        config: str,
        overrides: list[str],
        folds: list[str],
        workers: int = 1,
        verbose: bool = False,
    ) -> list[str]:
        """Run the pretraining stage (no ``folds``) or the folds (over ``workers`` GPUs)."""
        if not folds:
            steps.run(config, overrides=overrides, pretrain_only=True, verbose=verbose)
            return []
        workers = min(workers, len(folds))
        if workers > 1:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            gpus = [g for g in visible.split(",") if g.strip()] or None
            code = steps.run_parallel(config, workers, overrides, gpus, verbose, folds)
            if code:
                raise RuntimeError(f"a fold process of this job exited with {code}; see above")
        else:
            steps.run(config, folds=folds, overrides=overrides, skip_report=True, verbose=verbose)
        return folds


# ---------------------------------------------------------------- the job records


def read_jobs(folder: Path) -> list[dict[str, Any]]:
    """The recorded jobs of an experiment, oldest first (empty when none)."""
    path = folder / JOBS_FILE
    return json.loads(path.read_text())["jobs"] if path.is_file() else []


def record_jobs(folder: Path, jobs: Sequence[Any], kind: str, groups: Sequence[list[str]]) -> None:
    """Append submitted jobs (``kind`` ``"pretrain"`` or ``"folds"``, one fold group each)."""
    now = time.time()
    records = read_jobs(folder)
    for job, folds in zip(jobs, groups, strict=True):
        records.append(
            {
                "job_id": str(job.job_id),
                "kind": kind,
                "folds": list(folds),
                "cluster": "local" if isinstance(job, submitit.LocalJob) else "slurm",
                "folder": str(folder / "logs"),
                "submitted_at": now,
                "submitted": datetime.fromtimestamp(now, timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
        )
    atomic_write_text(folder / JOBS_FILE, json.dumps({"jobs": records}, indent=2))


def _outcome(record: dict[str, Any]) -> str | None:
    """``"success"`` / ``"error"`` from the job's result file; None while there is none."""
    path = JobPaths(record["folder"], job_id=record["job_id"]).result_pickle
    if not path.is_file():
        return None
    try:
        return pickle_load(path)[0]
    except Exception:  # a result file that cannot be read says nothing about success
        return None


def sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM's state of each job (array tasks as ``"123_4"``), by one ``sacct`` call.

    UNKNOWN for a job sacct does not list (just submitted, purged) or when there is no sacct.
    """
    watcher = SlurmInfoWatcher()  # a fresh one: no state cached from an earlier call
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()  # submitit logs a warning and goes on when sacct fails
    return {j: watcher.get_state(j, mode="cache").split(" ")[0].upper() for j in job_ids}


def job_states(records: Sequence[dict[str, Any]]) -> list[str]:
    """The state of each recorded job.

    SLURM's (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``, ``TIMEOUT``, ``CANCELLED``,
    ...), or for a local job ``RUNNING``, ``COMPLETED``, ``FAILED`` or ``KILLED`` (ended
    without a result); ``UNKNOWN`` when nothing can tell.
    """
    finished = {"success": "COMPLETED", "error": "FAILED"}
    sacct = sacct_states([r["job_id"] for r in records if r["cluster"] == "slurm"])
    states = []
    for record in records:
        outcome = _outcome(record)
        if record["cluster"] == "local":
            alive = process_alive(int(record["job_id"]), b"submitit")
            states.append("RUNNING" if alive else finished.get(outcome or "", "KILLED"))
            continue
        state = sacct.get(record["job_id"], "UNKNOWN")
        states.append(finished[outcome] if state == "UNKNOWN" and outcome else state)
    return states


def log_path(record: dict[str, Any]) -> Path:
    """The job's stderr log (submitit's)."""
    return JobPaths(record["folder"], job_id=record["job_id"]).stderr


# ---------------------------------------------------------------- status


@dataclass
class FoldStatus:
    """Where one fold stands.

    Attributes:
        fold: fold id.
        state: ``done`` (its predictions are there), ``running`` (its job runs and has begun
            it), ``queued`` (its job waits, or runs other folds first), ``failed`` (its job
            ended without its predictions), ``unknown`` (the scheduler does not know its job;
            not resubmitted, in case it still runs), ``unfinished`` (begun without a recorded
            job: a ``--launcher local`` run still going, or interrupted) or ``not started``.
        job_id: the latest recorded job holding the fold ("" when none).
        job_state: that job's state (:func:`job_states`; "" when none).
    """

    fold: str
    state: str
    job_id: str = ""
    job_state: str = ""


def fold_statuses(
    run_dir: Path,
    folds: Sequence[str],
    records: Sequence[dict[str, Any]],
    states: Sequence[str],
    fold_dirname: Callable[[str], str],
) -> list[FoldStatus]:
    """The status of every fold, from the run folder and the latest job holding each fold.

    ``states``: :func:`job_states` of ``records``.
    """
    latest: dict[str, int] = {}
    for k, record in enumerate(records):
        for fold in record["folds"]:
            latest[fold] = k
    out = []
    for fold in folds:
        fold_dir = run_dir / "folds" / fold_dirname(fold)
        k = latest.get(fold)
        job = (records[k]["job_id"], states[k]) if k is not None else ("", "")
        if (fold_dir / PREDICTIONS).is_file():
            label = "done"
        elif k is None:
            label = "unfinished" if fold_dir.is_dir() else "not started"
        elif states[k] in ACTIVE:
            begun = fold_dir.is_dir() and fold_dir.stat().st_mtime >= records[k]["submitted_at"]
            label = "running" if states[k] == "RUNNING" and begun else "queued"
        elif states[k] == "UNKNOWN":
            label = "unknown"
        else:
            label = "failed"
        out.append(FoldStatus(fold, label, *job))
    return out


def pretrain_status(
    settings: LosoSettings,
    run_dir: Path,
    records: Sequence[dict[str, Any]],
    states: Sequence[str],
) -> str:
    """One line on the shared pretraining stage.

    Done, running / queued / failed / unknown (with its job), or not started; "" when the
    experiment has no shared pretraining stage.
    """
    if not settings.pretrain_config or settings.pretrain_per_fold:
        return ""
    ckpt = run_dir / "pretrain" / "pretrained.ckpt"
    if ckpt.is_file():
        return f"done ({ckpt})"
    jobs = [k for k, r in enumerate(records) if r["kind"] == "pretrain"]
    if not jobs:
        return "not started"
    record, state = records[jobs[-1]], states[jobs[-1]]
    if state in ACTIVE:
        label = "running" if state == "RUNNING" else "queued"
    else:
        label = "unknown" if state == "UNKNOWN" else "failed"
    log = f"; log {log_path(record)}" if label == "failed" else ""
    return f"{label} (job {record['job_id']}, {state}{log})"


def experiment_folds(exp: Experiment) -> list[str]:
    """The folds of an experiment: from ``experiment.json``, else from its DataModule."""
    recorded = read_experiment(exp.run_dir)
    if recorded is not None:
        return list(recorded["folds"])
    return exp.classify.datamodule().subjects()


@dataclass
class Status:
    """Where an experiment stands: its folds, its pretraining stage and its recorded jobs."""

    folds: list[FoldStatus]
    pretrain: str
    records: list[dict[str, Any]]
    states: list[str]

    def count_line(self) -> str:
        """``"3 folds: 1 done, 1 running, 0 queued, 1 failed, 0 not started"``.

        Unknown / unfinished are counted too when there are any.
        """
        names = ["done", "running", "queued", "failed", "not started"]
        names += [n for n in ("unknown", "unfinished") if any(s.state == n for s in self.folds)]
        counts = ", ".join(f"{sum(s.state == n for s in self.folds)} {n}" for n in names)
        return f"{len(self.folds)} folds: {counts}"


def status(
    settings: LosoSettings,
    run_dir: Path,
    folds: Sequence[str],
    fold_dirname: Callable[[str], str],
) -> Status:
    """Where an experiment stands (asks the scheduler once; writes nothing)."""
    records = read_jobs(job_folder(settings, run_dir))
    states = job_states(records)
    return Status(
        fold_statuses(run_dir, folds, records, states, fold_dirname),
        pretrain_status(settings, run_dir, records, states),
        records,
        states,
    )


def print_status(config: str | Path, overrides: list[str], steps: LosoSteps) -> int:
    """``moext loso --config X --status``: a line per fold, the counts, what to do next."""
    exp = open_experiment(config, overrides)
    settings, run_dir = exp.settings, exp.run_dir
    now = status(settings, run_dir, experiment_folds(exp), steps.fold_dirname)
    if now.pretrain:
        print(f"pretraining: {now.pretrain}")
    width = max((len(s.fold) for s in now.folds), default=4)
    for s in now.folds:
        job = f"  job {s.job_id} ({s.job_state})" if s.job_id else ""
        print(f"{s.fold:<{width}}  {s.state:<11}{job}")
    print(now.count_line())
    failed = {s.job_id for s in now.folds if s.state == "failed"}
    for record in now.records:
        if record["job_id"] in failed:
            print(f"log of job {record['job_id']}: {log_path(record)}")
    if any(s.state == "unknown" for s in now.folds):
        print(
            "the scheduler does not know some jobs (no sacct here, or purged from its records): "
            f"they are not resubmitted; delete their entries in {job_folder(settings, run_dir) / JOBS_FILE} "
            "once you know they are gone"
        )
    if any(s.state in TO_SUBMIT for s in now.folds):
        print(
            f"submit what is neither done nor queued: moext loso --config {config} --launcher slurm"
        )
    elif all(s.state == "done" for s in now.folds):
        print(f"every fold is done: moext loso --config {config} --report")
    return 0


# ---------------------------------------------------------------- launching


def wait_for(records: Sequence[dict[str, Any]], poll_s: float) -> None:
    """Block until none of the recorded jobs is queued or running."""
    when = "while waiting for the submitted jobs (not cancelled: `--status` says where they stand)"
    with interrupted_when(when):
        while any(state in ACTIVE for state in job_states(records)):
            time.sleep(poll_s)


def check_can_submit(s: SlurmSettings, config: str) -> None:
    """Raise unless this machine can submit to ``s.cluster``.

    SLURM: ``srun`` on the PATH, as submitit requires; the local executor needs nothing.

    Raises:
        ValueError: no SLURM here, naming the ways to run the folds on this machine.
    """
    if s.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise ValueError(
            "--launcher slurm: no SLURM on this machine (no srun on the PATH); run the folds "
            f"here with `moext loso --config {config}` (add --workers N for folds side by side), "
            "or try the cluster jobs as local processes with `--launcher slurm --cluster local`"
        )


def launch(
    config: str | Path,
    overrides: list[str],
    options: argparse.Namespace,
    steps: LosoSteps,
    folds: list[str] | None = None,
    wait: bool = False,
    verbose: bool = False,
) -> int:
    """``moext loso --launcher slurm``: submit the pretraining job (if needed) and the folds.

    The folds that are neither done nor queued / running, in groups; with ``wait``, wait and
    pool.

    Returns:
        The exit code: 0 when submitted (or, waiting, when every chosen fold is done), else 1.
    """
    shown = str(config)
    config = str(Path(config).resolve())
    exp = open_experiment(config, overrides)
    s = with_options(exp.settings.slurm, options)
    check_can_submit(s, shown)  # before the run folder is written
    settings, run_dir = dataclasses.replace(exp.settings, slurm=s), exp.run_dir
    all_folds, _ = steps.start(exp)
    folder = job_folder(settings, run_dir)
    chosen = set(folds or all_folds)
    unknown = sorted(chosen - set(all_folds))
    if unknown:
        raise ValueError(f"unknown folds {unknown}; this experiment's folds: {all_folds}")
    before = status(settings, run_dir, all_folds, steps.fold_dirname)
    print(f"[slurm] {settings.name}: {before.count_line()}")
    todo = [x.fold for x in before.folds if x.fold in chosen and x.state in TO_SUBMIT]
    poll_s = 1.0 if s.cluster == "local" else 30.0
    if todo:
        dependency = submit_pretraining(
            settings, run_dir, before, config, overrides, steps, verbose
        )
        if dependency and s.cluster == "local":  # no dependencies locally: wait for it here
            print(f"[slurm] waiting for the pretraining job {dependency}", flush=True)
            wait_for([r for r in read_jobs(folder) if r["job_id"] == dependency], poll_s)
            if not (run_dir / "pretrain" / "pretrained.ckpt").is_file():
                print(
                    f"[slurm] pretraining: {status(settings, run_dir, [], steps.fold_dirname).pretrain}"
                )
                return 1
            dependency = None
        n = folds_per_job(s)
        groups = [todo[i : i + n] for i in range(0, len(todo), n)]
        executor = make_executor(folder, s, "folds", settings.name, dependency)
        with executor.batch():
            jobs = [
                executor.submit(
                    LosoJob(), steps, config, overrides, group, workers_per_job(s), verbose
                )
                for group in groups
            ]
        record_jobs(folder, jobs, "folds", groups)
        after = f", after job {dependency}" if dependency else ""
        ids = ", ".join(str(j.job_id) for j in jobs)
        print(f"[slurm] submitted {len(todo)} fold(s) as {len(jobs)} job(s){after}: {ids}")
    else:
        print("[slurm] nothing to submit")
    if not wait:
        print(f"[slurm] job files and logs in {folder}")
        print(f"[slurm] follow: moext loso --config {config} --status")
        print(f"[slurm] pool when done: moext loso --config {config} --report")
        return 0
    wait_for([r for r in read_jobs(folder) if set(r["folds"]) & chosen], poll_s)
    steps.run(config, overrides=overrides, report_only=True, verbose=verbose)
    after = status(settings, run_dir, all_folds, steps.fold_dirname)
    print(f"[slurm] {after.count_line()}")
    return 0 if all(x.state == "done" for x in after.folds if x.fold in chosen) else 1


def submit_pretraining(
    settings: LosoSettings,
    run_dir: Path,
    now: Status,
    config: str,
    overrides: list[str],
    steps: LosoSteps,
    verbose: bool = False,
) -> str | None:
    """Submit the shared pretraining job unless it is done or queued / running.

    Unless its checkpoint is there or a recorded job is still queued / running on it; returns
    the id of the job the folds must wait for, or None.
    """
    if not settings.pretrain_config or settings.pretrain_per_fold:
        return None
    if (run_dir / "pretrain" / "pretrained.ckpt").is_file():
        return None
    earlier = [k for k, r in enumerate(now.records) if r["kind"] == "pretrain"]
    if earlier and now.states[earlier[-1]] in ACTIVE | {"UNKNOWN"}:
        return now.records[earlier[-1]]["job_id"]
    folder = job_folder(settings, run_dir)
    executor = make_executor(folder, settings.slurm, "pretrain", settings.name)
    job = executor.submit(LosoJob(), steps, config, overrides, [], 1, verbose)
    record_jobs(folder, [job], "pretrain", [[]])
    print(f"[slurm] submitted the pretraining job {job.job_id}", flush=True)
    return str(job.job_id)
