"""What the running job knows about itself: output dir, overrides, sweep membership, the job it
belongs to (SLURM / torchrun), and which run directory and checkpoint it continues."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def hydra_is_running() -> bool:
    """True inside a ``@hydra.main`` job (False under ``compose`` in tests or notebooks)."""
    return HydraConfig.initialized()


def job_overrides() -> list[str]:
    """The command-line overrides of this job (for a sweep job: its point of the grid)."""
    if not hydra_is_running():
        return []
    return list(HydraConfig.get().overrides.task)


def sweep_group() -> str | None:
    """Name shared by all jobs of one ``--multirun`` (its sweep directory), else ``None``.

    Used as the W&B ``group`` so that the runs of a sweep are shown together.
    """
    if not hydra_is_running():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def job_number() -> int | None:
    """Index of this job within its sweep (``hydra.job.num``), ``None`` outside a multirun."""
    if not hydra_is_running():
        return None
    hc = HydraConfig.get()
    return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None


def device_count(devices: object, accelerator: object = "auto") -> int:
    """How many devices a trainer's ``devices`` setting asks for on this machine."""
    from smp_parsing.utils.accelerator import uses_cuda

    if devices in ("auto", -1, "-1"):
        import torch

        return torch.cuda.device_count() if uses_cuda(accelerator) else 1
    if isinstance(devices, str):
        return len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    if isinstance(devices, int):
        return devices
    return len(list(devices))  # a list of device indices


def check_ddp_launch(
    strategy: object, devices: object = 1, accelerator: object = "cpu", num_nodes: object = 1
) -> None:
    """Refuse DDP ranks started by re-running the command inside a local ``--multirun``.

    Lightning's ``ddp`` (also what ``strategy=auto`` picks for several devices or nodes, e.g. the
    paper experiments on a multi-GPU machine) starts the other ranks by re-running the command
    line; inside a multirun of the basic (in-process) launcher that command is the whole sweep,
    so every rank would run every job. One job per device set needs a launcher that gives each
    job its own processes.

    Raises:
        ValueError: with the alternatives.
    """
    relaunches = strategy == "ddp" or (
        strategy in (None, "auto")
        and (int(num_nodes or 1) > 1 or device_count(devices, accelerator) > 1)
    )
    if not relaunches or not hydra_is_running():
        return
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and str(hc.launcher._target_).endswith("BasicLauncher"):
        raise ValueError(
            "DDP (trainer strategy 'ddp', or 'auto' on several devices) inside a local --multirun "
            "would re-run the whole sweep in every rank: use hydra/launcher=slurm (one SLURM "
            "job per sweep point), trainer.devices=1, trainer=ddp_sim / strategy=ddp_spawn, or "
            "run the jobs one by one."
        )


# ------------------------------------------------------------------------------------------------
# Run directories and resuming (conf/hydra/default.yaml, smp_parsing.train)
# ------------------------------------------------------------------------------------------------
# Overrides that say how to start, not what to train: ignored when matching a run to resume.
START_OVERRIDES = ("ckpt_path", "resume")
# Finished runs (smp_parsing.train writes it last); an unfinished run has checkpoints but not this.
FINISHED_MARKER = "metrics.json"


def job_key() -> str | None:
    """Name of this job shared by all of its processes and kept by a requeued job, else ``None``.

    Every rank of one job, and the same job requeued after a pre-emption, must write into one
    run directory; the process id (the local default) differs between ranks and restarts.

    - SLURM (``sbatch``/``srun``, not an interactive allocation, as Lightning's
      ``SLURMEnvironment.detect``): ``slurm-<job id>[_<array task>][.<step id>]``; a requeued job
      keeps its job id, and the step id tells the ``srun`` steps of one allocation apart.
    - torchrun: ``torchrun-<rdzv id>`` (pass ``--rdzv-id``; torchrun's default id ``none`` falls
      back to the agent's process id, shared by the ranks of one node).
    """
    env = os.environ
    if env.get("SLURM_JOB_ID") and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        key = env.get("SLURM_ARRAY_JOB_ID") or env["SLURM_JOB_ID"]
        if env.get("SLURM_ARRAY_TASK_ID"):
            key += f"_{env['SLURM_ARRAY_TASK_ID']}"
        step = env.get("SLURM_STEP_ID")
        return f"slurm-{key}" + (f".{step}" if step and step.isdigit() else "")
    run_id = env.get("TORCHELASTIC_RUN_ID")
    if run_id is not None:
        return f"torchrun-{run_id if run_id != 'none' else os.getppid()}"
    return None


def local_run_name() -> str:
    """``<date>_<time>_<pid>-<6 hex>``: unique per process (two runs in one second differ)."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run_dir_of_checkpoint(ckpt_path: str | os.PathLike) -> Path | None:
    """The run directory a checkpoint was written by (the ancestor holding ``.hydra/``)."""
    path = Path(ckpt_path).resolve()
    for parent in list(path.parents)[:4]:  # <run>/checkpoints[/mir]/x.ckpt, <run>[/mir]/hpc_ckpt_1
        if (parent / ".hydra").is_dir():
            return parent
    return None


def _start_free(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in START_OVERRIDES)


def latest_unfinished_run(runs_root: str | os.PathLike, overrides: list[str]) -> Path | None:
    """The newest run under ``runs_root`` with the same overrides, checkpoints and no
    ``metrics.json`` (an interrupted run), for ``resume=auto`` outside SLURM / torchrun."""
    import yaml

    wanted = _start_free(overrides)
    candidates = []
    for run in Path(runs_root).glob("*/.hydra/overrides.yaml"):
        run = run.parent.parent
        if (run / FINISHED_MARKER).exists() or find_resume_checkpoint(run) is None:
            continue
        if _start_free(yaml.safe_load((run / ".hydra/overrides.yaml").read_text()) or []) == wanted:
            candidates.append((run.stat().st_mtime, run))
    return max(candidates)[1] if candidates else None


def choose_run_dir(
    runs_root: str,
    ckpt_path: str | None = None,
    resume: object = None,
    overrides: list[str] | None = None,
    stage: str | None = None,
) -> str:
    """The run directory of a training job (``hydra.run.dir``, resolver ``${run_dir:...}``).

    1. Resuming from ``ckpt_path`` written by a run under ``runs_root``: that run's directory, so
       the checkpoints, logs and W&B id continue there (not for ``stage=mir`` initialised from a
       main-stage checkpoint: that is a new run, whose checkpoints must not replace the main ones).
    2. Under SLURM / torchrun: ``<runs_root>/<job key>`` (:func:`job_key`), the same for every
       rank and for a requeued job.
    3. ``resume=auto``: the newest interrupted run with the same overrides (if any).
    4. Else a new ``<runs_root>/<date>_<time>_<pid>-<hex>``.
    """
    root = Path(runs_root)
    if ckpt_path:
        run = run_dir_of_checkpoint(ckpt_path)
        if run is not None and root.resolve() in run.parents:
            if stage != "mir" or _checkpoint_stage(ckpt_path) == "mir":
                return str(run)
    key = job_key()
    if key is not None:
        return str(root / key)
    if resume == "auto":
        run = latest_unfinished_run(root, list(overrides or []))
        if run is not None:
            return str(run)
    return str(root / local_run_name())


def _checkpoint_stage(ckpt_path: str | os.PathLike) -> str:
    """Stage recorded in a checkpoint's hyper-parameters (``main`` when absent)."""
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return str(ckpt.get("hyper_parameters", {}).get("stage", "main"))


def find_resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint a run wrote (``checkpoints/**``: last, pre-emption, step and top-k
    checkpoints; Lightning's SLURM ``hpc_ckpt_*`` in the run directory or its ``mir/``)."""
    run = Path(run_dir)
    files = [*run.glob("checkpoints/**/*.ckpt"), *run.glob("hpc_ckpt_*.ckpt"),
             *run.glob("mir/hpc_ckpt_*.ckpt")]  # fmt: skip
    files = [f for f in files if f.is_file()]
    return max(files, key=lambda f: f.stat().st_mtime_ns) if files else None


def wants_resume(resume: object) -> bool:
    """``resume=auto`` always; the default (``null``) inside a SLURM / torchrun job (a requeued
    job continues by itself); ``resume=false`` never."""
    if resume in (None, "null"):
        return job_key() is not None
    if resume == "auto":
        return True
    if resume in (False, "false", "never"):
        return False
    raise ValueError(
        f"resume must be auto, false or null (auto inside a SLURM/torchrun job), got {resume!r}"
    )


def project_root() -> str:
    """``$PROJECT_ROOT``, else the checkout this package runs from (the directory holding
    ``conf/``), else the working directory: data and log paths must not depend on where a job
    was submitted from (a SLURM job starts in the submit directory)."""
    if os.environ.get("PROJECT_ROOT"):
        return os.environ["PROJECT_ROOT"]
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "conf" / "train.yaml").is_file():
        return str(checkout)
    return os.getcwd()
