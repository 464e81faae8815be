"""The `dltrain` command: Hydra composes the config, `train` runs it, errors become one line (`dltrain validate`
is dltrain.commands.validate).

Only Hydra is imported here; torch and Lightning load inside the job, so `dltrain --help` answers fast.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM outside Lightning's fit: an exception, so that the command ends saying so (Python's default is
    to die silently). While fit runs, dltrain.training.train sets this handler aside: Lightning's stops at the
    next batch and InterruptCheckpoint saves."""
    if "main" not in globals():  # still importing this module: nothing started, nothing to record
        print("dltrain: stopped by SIGTERM before training started", file=sys.stderr)
        raise SystemExit(143)
    from dltrain.errors import Terminated

    raise Terminated("terminated by SIGTERM")


# Before the slow imports: a SIGTERM while they run ends the command saying so (Python's default is silence).
signal.signal(signal.SIGTERM, _terminate)

import hydra  # noqa: E402 - after the handler above
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from dltrain.commands.shared import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, fail, skip_final_collection  # noqa: E402
from dltrain.paths import config_dir  # noqa: E402
from dltrain.config.resume import register_resolvers, resumed_config  # noqa: E402

register_resolvers()  # at import, so that sweep jobs in worker processes (joblib) resolve the run dir too


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_job(cfg: DictConfig) -> dict | None:
    """One job: a single run, or one job of a sweep. A sweep's failed job is recorded and the sweep goes on.

    Long (about 60 lines) as one try block: how a failed job is reported (its log, its run folder kept or
    discarded, a sweep's record) depends on the run folder and sweep state the job's first lines work out."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dltrain.errors import Reported, RunInterrupted, one_line, user_error_in
    from dltrain.training.preflight import validate

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if in_sweep:
        trial_processes = int(os.environ.get("DLTRAIN_TRIAL_PROCESS", 0))  # one of a search's n_jobs processes
        if trial_processes or not str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher"):
            _prefix_terminal_lines(f"[{'trial' if trial_processes else 'job'} {hydra_cfg.job.num}] ")
            from dltrain.distributed import cpu_cores, share_cpu_threads

            share_cpu_threads(trial_processes or _parallel_jobs(hydra_cfg.launcher.get("n_jobs"), cpu_cores()))
    try:
        earlier = _continued_job(run_dir, hydra_cfg) if in_sweep and not cfg.resume else None
        if earlier is not None and earlier.get("status") in ("completed", "pruned"):
            logging.getLogger("dltrain").info(f"job {hydra_cfg.job.num} {earlier['status']} before: {run_dir}")
            return earlier
        if earlier is not None:  # the same sweep job again: it goes on from its stored config
            logging.getLogger("dltrain").info(f"job {hydra_cfg.job.num} continues from {run_dir}")
            cfg = resumed_config(run_dir, [], _config_dirs(hydra_cfg))
        elif cfg.resume:
            cfg = resumed_config(run_dir, list(hydra_cfg.overrides.task), _config_dirs(hydra_cfg))
        validated = validate(cfg, _config_dirs(hydra_cfg))  # once per run, before the heavy imports: answers at once
        from dltrain.collection import resume_collections
        from dltrain.distributed import ddp_job
        from dltrain.sweeps.pruning import trial_pruning
        from dltrain.training.cross_validation import cross_validate
        from dltrain.training.train import train

        resume_collections()  # the imports are done; the data and what the run makes are collected as usual
        with ddp_job(hydra_cfg):
            if OmegaConf.select(cfg, "cv.folds", default=0):
                return cross_validate(validated, run_dir, resume=bool(cfg.resume))
            return train(validated, run_dir, resume=bool(cfg.resume), callbacks=trial_pruning(hydra_cfg, cfg))
    except RunInterrupted as exc:
        if in_sweep:  # where a plain sweep's summary goes, should the command summarize it (main)
            exc.sweep = (Path(hydra_cfg.sweep.dir), str(cfg.monitor), str(cfg.mode))
        raise
    except Exception as exc:
        user = user_error_in(exc)
        if not in_sweep and user is None:
            exc.add_note("dltrain: raised inside a job")  # not Hydra's refusal of the command (_composition_error)
            raise
        from dltrain.rundir.files import record_failure

        from dltrain.rundir.claim import RunDirInUse

        if isinstance(user, RunDirInUse):  # the folder and its log are another live process's: not a line of ours
            _detach_log_files(run_dir)
        # Reported here, inside the job, so the line also reaches the run's log file.
        log = logging.getLogger("dltrain")
        log.error(f"dltrain: error: {one_line(user or exc)}", exc_info=user is None)
        if in_sweep:
            return record_failure(run_dir, one_line(user or exc))
        if not cfg.resume and not isinstance(user, RunDirInUse):
            _discard_if_unstarted(run_dir)
        raise Reported(user) from exc


def _detach_log_files(run_dir: Path) -> None:
    """Close and remove the logging file handlers that write into `run_dir` (Hydra's <run>/dltrain.log)."""
    inside = run_dir.resolve()
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)):
        for handler in list(getattr(logger, "handlers", ())):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().is_relative_to(inside):
                logger.removeHandler(handler)
                handler.close()


def _parallel_jobs(n_jobs: Any, cores: int) -> int:
    """How many jobs joblib's n_jobs runs at once: a count, or -1 for every core, -2 for all but one, ..."""
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def _prefix_terminal_lines(prefix: str) -> None:
    """Jobs running in parallel (the joblib launcher) share the terminal: each of a job's lines starts with
    its number. The run's log file keeps its own format."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))


def _continued_job(run_dir: Path, hydra_cfg: DictConfig) -> dict | None:
    """A sweep job whose folder holds a run of the same overrides (the same sweep command again, in the same
    hydra.sweep.dir): that run's results.json record (its status says whether it is done), or None for a
    fresh folder. A folder holding another job's run is refused."""
    from dltrain.errors import ConfigError
    from dltrain.rundir.claim import holds_run
    from dltrain.rundir.files import read_results
    from dltrain.rundir.layout import RunDir

    if not holds_run(run_dir):
        return None
    stored = RunDir(run_dir).hydra_overrides
    asked = list(hydra_cfg.overrides.task)
    if not stored.is_file() or list(OmegaConf.load(stored)) != asked:
        raise ConfigError(f"{run_dir} holds a run of other overrides than job {hydra_cfg.job.num} "
                          f"({' '.join(asked)}): continue a sweep with its own command, or use another "
                          "hydra.sweep.dir")
    return read_results(run_dir) or {"status": "unfinished"}


def _discard_if_unstarted(run_dir: Path) -> None:
    """A run refused before it trained leaves no folder that could be taken for a run: Hydra made it with
    only its .hydra/ files and the log, and the error line says all the log would."""
    import shutil

    from dltrain.rundir.layout import HYDRA_FOLDER

    if run_dir.is_dir() and all(p.name == HYDRA_FOLDER or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def _config_dirs(hydra_cfg: DictConfig) -> tuple[Path, ...]:
    """The config folders of this command (the shipped one, and those the user named with --config-dir or
    hydra.searchpath): their presets' callables are trusted."""
    return tuple(Path(source.path) for source in hydra_cfg.runtime.config_sources if source.schema == "file")


def _composition_error(exc: BaseException) -> bool:
    """Whether Hydra or OmegaConf refused the command line or the config: their error types, and the plain
    ValueError Hydra raises for a bad combination of its flags (-m with --cfg), which no job has raised."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    in_job = "dltrain: raised inside a job" in getattr(exc, "__notes__", ())
    return isinstance(exc, (HydraException, OmegaConfBaseException)) or (type(exc) is ValueError and not in_job)


def _unparsable(exc: BaseException) -> str | None:
    """Hydra's parse error of an override (a bare `LexerNoViableAltException`) as what to type instead."""
    from hydra.errors import OverrideParseException

    override = getattr(exc, "override", None) if isinstance(exc, OverrideParseException) else None
    if not override or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return (f"cannot read {override!r}: Hydra's override grammar does not take that value unquoted; quote it "
            f"for Hydra inside quotes for the shell: '{key}=\"{value}\"'")


def _sweep_interrupted(exc: BaseException) -> str:
    """A plain sweep stopped by Ctrl-C or SIGTERM: its summary for the jobs so far, and how to go on."""
    from dltrain.sweeps.summary import write_summary

    sweep_dir, monitor, mode = exc.sweep
    outcome = write_summary(sweep_dir, monitor, mode)
    return (f"{exc}; the sweep stopped there and started no later job. Summary of its {outcome.jobs} job(s) so "
            f"far: {sweep_dir / 'summary.md'}. Continue it with the same command and hydra.sweep.dir={sweep_dir}: "
            "the finished jobs are kept, the cut-off one continues from its checkpoint, the others run")


def main() -> None:
    """Console entry point. Hydra is told to raise errors so that they are reported here in one line.

    Long (about 50 lines) as one try with an except per way the command can end: every exit code it gives, and
    the line that goes with it, stands here in the order Python matches them."""
    from dltrain.errors import Reported, RunInterrupted, Terminated, user_error_in
    from dltrain.sweeps.summary import SweepIncomplete

    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from dltrain.commands.help import render_help

        print(render_help([arg for arg in sys.argv[1:] if arg not in ("--help", "-h")]))
        return
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises, rather than printing its own report, and this reports
    try:
        if sys.argv[1:2] == ["validate"]:
            from dltrain.commands.validate import validate_command

            validate_command(sys.argv[2:])
        else:
            _train_job()
    except Reported as exc:  # the job has said it in one line, in its log too
        if full_error:
            raise exc.__cause__ from None
        sys.exit(EXIT_USER_ERROR)
    except SweepIncomplete as exc:
        outcome = exc.outcome
        if outcome.error:
            print(f"dltrain: internal error (a bug, not your input): the summary of {outcome.sweep_dir} could not "
                  f"be written ({outcome.error}; its traceback is above): please report it", file=sys.stderr)
            sys.exit(EXIT_INTERNAL_ERROR)
        first = outcome.failed[0]
        print(f"dltrain: error: {len(outcome.failed)} of {outcome.jobs} sweep jobs did not complete (job "
              f"{first['job']}: {first['error'] or first['status']}); see {outcome.sweep_dir / 'summary.md'}",
              file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except RunInterrupted as exc:
        if getattr(exc, "summarized", False):  # a search has summarized its study and said how to continue
            message = str(exc)
        elif getattr(exc, "sweep", None):
            message = _sweep_interrupted(exc)
        else:
            message = f"{exc}; {exc.then}" if exc.then else str(exc)
        print(f"dltrain: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Terminated) as exc:
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
        print(f"dltrain: stopped by {name} outside training (a run keeps every checkpoint it wrote)", file=sys.stderr)
        sys.exit(code)
    except Exception as exc:
        # By type: a dltrain UserError (wrapped by Hydra or OmegaConf or not), or Hydra's and OmegaConf's own
        # refusal of the command line; anything else is a bug.
        fail("dltrain", exc, full_error=full_error, message=_unparsable(exc),
             user=user_error_in(exc) or (exc if _composition_error(exc) else None))


def console_main() -> None:
    """The `dltrain` console script: main() with garbage collections held while it starts (dltrain.collection),
    then an exit that skips the final garbage collection."""
    from dltrain.collection import hold_collections

    hold_collections()
    try:
        main()
    finally:
        skip_final_collection()

