"""The `dltrain` command: Hydra composes the config, `train` runs it, errors become one line.

Only Hydra is imported here; torch and Lightning load inside the job, so `dltrain --help` answers fast.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dltrain.paths import config_dir
from dltrain.resume import register_resolvers

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 1, 2
register_resolvers()  # at import, so that sweep jobs in worker processes (joblib) resolve the run dir too
_USER_FULL_ERROR = "DLTRAIN_USER_FULL_ERROR"  # remembers the user's own HYDRA_FULL_ERROR for the job


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_job(cfg: DictConfig) -> dict | None:
    """One job: a single run, or one job of a sweep. A sweep's failed job is recorded and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dltrain.config_check import check_config
    from dltrain.errors import RunInterrupted, UserError, one_line

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if cfg.resume:
            from dltrain.resume import resumed_config

            cfg = resumed_config(run_dir, list(hydra_cfg.overrides.task), _config_dirs(hydra_cfg))
        check_config(cfg)  # before the heavy imports, so a config error answers at once
        from dltrain.distributed import ddp_job

        with ddp_job(hydra_cfg):
            if OmegaConf.select(cfg, "cv.folds", default=0):
                from dltrain.cross_validation import cross_validate

                return cross_validate(cfg, run_dir, resume=bool(cfg.resume))
            from dltrain.sweeps.pruning import trial_pruning
            from dltrain.train import train

            return train(cfg, run_dir, resume=bool(cfg.resume), callbacks=trial_pruning(hydra_cfg, cfg))
    except RunInterrupted:
        raise
    except Exception as exc:
        if not in_sweep and (not isinstance(exc, UserError) or os.environ.get(_USER_FULL_ERROR) == "1"):
            raise
        from dltrain.run_files import record_failure

        # Reported here, inside the job, so the line also reaches the run's log file.
        log = logging.getLogger("dltrain")
        log.error(f"dltrain: error: {one_line(exc)}", exc_info=not isinstance(exc, UserError))
        if in_sweep:
            return record_failure(run_dir, one_line(exc))
        sys.exit(EXIT_USER_ERROR)


def _config_dirs(hydra_cfg: DictConfig) -> tuple[Path, ...]:
    """The config folders of this command (the shipped one, and those the user named with --config-dir or
    hydra.searchpath): their presets' callables are trusted."""
    return tuple(Path(source.path) for source in hydra_cfg.runtime.config_sources if source.schema == "file")


def _fail_if_sweep_jobs_failed() -> None:
    """After a sweep ran all its jobs: a non-zero exit when any failed, naming the first."""
    from dltrain.errors import UserError
    from dltrain.sweeps import summary

    outcome = summary.last_outcome
    if outcome is not None and outcome.error:
        raise RuntimeError(f"the summary of {outcome.sweep_dir} could not be written: {outcome.error}")
    if outcome is not None and outcome.failed:
        first = outcome.failed[0]
        raise UserError(f"{len(outcome.failed)} of {outcome.jobs} sweep jobs did not complete "
                        f"(job {first['job']}: {first['error'] or first['status']}); see {outcome.sweep_dir / 'summary.md'}")


def _raised_by_hydra(exc: BaseException) -> bool:
    """Whether an exception comes from Hydra's own argument handling (e.g. -m with --cfg), a user mistake."""
    frame = exc.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_globals.get("__name__", "").startswith("hydra.")


def main() -> None:
    """Console entry point. Hydra is told to raise errors so that they are reported here in one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dltrain.errors import RunInterrupted, UserError, one_line

    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from dltrain.help import render_help

        print(render_help())
        return
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ[_USER_FULL_ERROR] = "1" if full_error else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _train_job()
        _fail_if_sweep_jobs_failed()
    except (UserError, HydraException, OmegaConfBaseException, ValueError) as exc:
        if isinstance(exc, ValueError) and not _raised_by_hydra(exc):
            _internal_error()
        if full_error:
            raise
        print(f"dltrain: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except RunInterrupted as exc:
        print(f"dltrain: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("dltrain: interrupted before training started", file=sys.stderr)
        sys.exit(130)
    except Exception:
        _internal_error()


def console_main() -> None:
    """The `dltrain` console script: main(), then an exit that skips the final garbage collection."""
    from dltrain.tools import skip_final_collection

    try:
        main()
    finally:
        skip_final_collection()


def _internal_error() -> None:
    """Report the exception being handled as a bug: its traceback, and exit code 2."""
    traceback.print_exc()
    print("dltrain: internal error (a bug, not your input): please report it with the traceback above.", file=sys.stderr)
    sys.exit(EXIT_INTERNAL_ERROR)
