"""Where a study lives and how the workers sharing it stay in step: the storage, a lock, heartbeats.

Several search processes (on one machine or many) share one study. Optuna keeps each trial safe on its own,
but taking "the next trial, if the study still needs one" is a count and an ask: two workers could both
see one trial missing and both ask. `SharedStudy.lock` makes that step one at a time, with the lock the
storage offers: a PostgreSQL advisory lock or MySQL's GET_LOCK (both released by the server when a worker's
connection dies), an flock beside a SQLite file, Optuna's own lock file beside a journal.

A worker that dies mid-trial (SIGKILL, a lost machine) must not leave its trial RUNNING forever. On a
database, that is Optuna's heartbeat (RDBStorage's heartbeat_interval and grace_period, fail_stale_trials,
RetryHeartbeatStaleTrialCallback). Optuna's journal storage has no heartbeat, so its workers beat into a
trial system attribute instead, and a trial whose beat has not changed for the grace period, as seen by
the worker watching, is failed and retried the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from dltrain.errors import ConfigError

# Optuna calls its heartbeat, stale-trial and retry functions experimental at every call; dltrain relies on
# them knowingly, and a user can do nothing about the warning.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
JOURNAL = "journal://"
TRIAL_PROCESS = "DLTRAIN_TRIAL_PROCESS"  # set for a process that runs one trial of a search's n_jobs: the count
# Trial system attributes: the process running it, its last beat (journal), whether a stop cut it off, its GPUs.
WORKER, BEAT, CUT_OFF, DEVICES = "dltrain_worker", "dltrain_heartbeat", "dltrain_cut_off", "dltrain_cuda_visible_devices"


def this_worker(pid: int | None = None) -> str:
    """How a trial names the process running it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def journal_path(url: str) -> Path:
    """journal:///abs/path.log or journal://relative/path.log -> the journal file."""
    return Path(url.removeprefix(JOURNAL))


def shown(url: str) -> str:
    """A storage URL as messages and logs print it: a database password masked."""
    if url.startswith(JOURNAL):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: the message saying so names it as given
        return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry: Any = None) -> optuna.storages.BaseStorage:
    """The storage a URL names: a journal file, or a database (SQLite, PostgreSQL, MySQL) with Optuna's heartbeat
    when heartbeat_interval is given."""
    if url.startswith(JOURNAL):  # its folder, as a SQLite file's, made by SharedStudy.lock
        path = str(journal_path(url))
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=retry)
    except ImportError as exc:
        raise ConfigError(f"hydra.sweeper.storage={shown(url)}: {exc}; for PostgreSQL: pip install 'dltrain[postgres]'"
                          ) from exc
    except Exception as exc:  # a bad URL or an unreachable server, in the driver's words
        raise ConfigError(f"hydra.sweeper.storage={shown(url)} cannot be opened: {str(exc).splitlines()[0]}") from exc


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` (what its heartbeat and attributes are kept under)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


class SharedStudy:
    """A study and the storage it lives in, as one worker of the study sees them."""

    def __init__(self, url: str, study_name: str, heartbeat_interval: int, grace_period: int, retries: int) -> None:
        self.url, self.study_name = url, study_name
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        # A trial whose worker stopped beating is failed and queued to run again, up to `retries` times.
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)
        try:
            with self.lock():  # two workers starting together on a new database would both create Optuna's tables
                self.storage = open_storage(url, heartbeat_interval, grace_period, self.retry)
        except OSError as exc:  # a folder that cannot be made or written
            raise ConfigError(f"hydra.sweeper.storage={shown(url)} cannot be used: {exc.strerror}: {exc.filename}"
                              ) from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:  # the lock's connection: a server not there, a wrong password
            raise ConfigError(f"hydra.sweeper.storage={shown(url)} cannot be opened: {str(exc).splitlines()[0]}"
                              ) from exc
        self.study: optuna.Study | None = None  # set by search.open_study, with the sampler's config
        self.sampler: Any = None
        self.seen: dict[int, tuple[Any, float]] = {}  # journal: trial number -> (its beat, when this worker saw it)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the study's lock (every worker of this study name in this storage) for the block."""
        url = self.url
        if url.startswith(JOURNAL):
            journal_path(url).parent.mkdir(parents=True, exist_ok=True)
            lock = JournalFileOpenLock(f"{journal_path(url)}.dltrain")  # not the journal's own lock file
            lock.acquire()
            try:
                yield
            finally:
                lock.release()
        elif url.startswith("sqlite"):
            database = Path(url.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            with open(f"{database}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
        else:
            take, free = (("SELECT pg_advisory_lock(hashtext(:key))", "SELECT pg_advisory_unlock(hashtext(:key))")
                          if url.startswith("postgres") else ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"))
            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            key = {"key": f"dltrain:{self.study_name}"}
            try:
                with engine.connect() as connection:
                    connection.execute(sqlalchemy.text(take), key)
                    try:
                        yield
                    finally:
                        connection.execute(sqlalchemy.text(free), key)
            finally:
                engine.dispose()

    def trial_id(self, number: int) -> int:
        return trial_id(self.storage, self.study_name, number)

    def set_attrs(self, number: int, **attrs: Any) -> None:
        trial = self.trial_id(number)
        for key, value in attrs.items():
            self.storage.set_trial_system_attr(trial, key, value)

    def beat(self, number: int) -> None:
        """Say that trial `number` is alive."""
        if isinstance(self.storage, RDBStorage):
            self.storage.record_heartbeat(self.trial_id(number))
        else:
            self.set_attrs(number, **{BEAT: time.time()})

    @contextlib.contextmanager
    def heartbeat(self, number: int) -> Iterator[None]:
        """Beat for trial `number` every heartbeat_interval seconds from a thread while the block runs."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self.heartbeat_interval):
                with contextlib.suppress(Exception):  # a missed beat is made up by the next; the trial goes on
                    self.beat(number)

        self.beat(number)
        thread = threading.Thread(target=run, name=f"heartbeat-{number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def fail_stale(self) -> None:
        """Fail the trials whose worker stopped beating, each queued to run again: Optuna's check on a database;
        on a journal, the beats this worker has watched not change for the grace period."""
        if isinstance(self.storage, RDBStorage):
            optuna.storages.fail_stale_trials(self.study)
            return
        now = time.monotonic()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if WORKER not in trial.system_attrs or trial.system_attrs.get(CUT_OFF):
                continue  # not a dltrain worker's, or cut off on purpose: the next start takes it over
            beat = trial.system_attrs.get(BEAT)
            seen_beat, since = self.seen.setdefault(trial.number, (beat, now))
            if seen_beat != beat:
                self.seen[trial.number] = (beat, now)
            elif now - since > self.grace_period:
                self.fail_and_retry(trial)

    def wait_s(self) -> float:
        """How long a worker with no trial to take waits before looking again at the trials others run."""
        return max(0.5, min(5.0, self.grace_period / 4))

    def fail_and_retry(self, trial: FrozenTrial) -> None:
        """Mark a RUNNING trial whose process is gone as failed, and queue it to run again."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was first
            if self.storage.set_trial_state_values(self.trial_id(trial.number), state=TrialState.FAIL):
                self.retry(self.study, self.storage.get_trial(self.trial_id(trial.number)))
