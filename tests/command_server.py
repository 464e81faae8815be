"""Run dltrain's console scripts in fresh processes forked from one that has already imported them.

Nearly all of the suite's time was processes importing torch and Lightning again for each command a test
runs. A test's command here is still its own process, started as the console script would run (its
arguments, working folder, environment, output captured, exit code), only forked from a server process
that did the imports once per pytest worker (like multiprocessing's forkserver, which cannot be used here:
its children leave without running the atexit handlers a real command ends with).

The server has run no torch operation when it forks (so no thread pool is copied half-made). A command
whose environment changes what an import reads (the variables in REAL_PROCESS_ONLY) runs as a real
process instead, as does one with joblib's launcher (its worker processes hung when started from a forked
child) and every command when DLTRAIN_TEST_REAL_PROCESSES=1.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Read when a module is imported (or by the interpreter): a command given one of these gets a process of its own.
REAL_PROCESS_ONLY = ("PYTHONPATH", "PYTHONWARNINGS", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "CUDA_VISIBLE_DEVICES", "TORCH_HOME", "MPLBACKEND", "MLFLOW_LOGGING_LEVEL")
PRELOAD = ("dltrain.commands.train", "dltrain.training.train", "dltrain.commands.evaluate", "dltrain.commands.predict",
           "dltrain.commands.runs", "dltrain.commands.export", "dltrain.checkpoints.reading", "dltrain.sweeps.search")


def serve() -> None:
    """The server: import, then for each request (a JSON line on stdin) fork a child that runs the command,
    and answer its pid and then its exit code on stdout."""
    import importlib

    sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # a command's folder is not on a real one's path
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    torch.set_num_threads(int(os.environ.get("DLTRAIN_TEST_THREADS", torch.get_num_threads())))  # see conftest
    gc.freeze()  # what the imports made stays shared with the children, and out of their exit's collection
    requests, answers = sys.stdin, sys.stdout
    answers.write("ready\n")
    answers.flush()
    for line in requests:
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        answers.write(f"{pid}\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answers.flush()


def _child(request: dict) -> None:
    """In the forked child: become the command and run it; the interpreter then exits as the command's would."""
    for fd, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["argv0"], *request["args"]]
    code = 0
    try:
        _entry_point(request["script"])()
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # as the interpreter reports an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):  # sys.exit("message"), as the interpreter reports it
        print(code, file=sys.stderr)
        code = 1
    # The interpreter's exit, less the teardown of every module the server imported (most of a second here,
    # which a real command that never imported them does not spend): threads joined, atexit handlers run.
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _entry_point(script: str):
    from importlib.metadata import entry_points

    return next(iter(entry_points(group="console_scripts", name=script))).load()


class CommandServer:
    """The test side: one server process per pytest worker, one command at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import command_server; command_server.serve()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).parent, env=os.environ | {
                                            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        self.lock = threading.Lock()
        assert self.process.stdout.readline().strip() == "ready", "the command server did not start"

    def run(self, script: str, argv0: str, args: list[str], cwd: Path, env: dict, timeout: float
            ) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory() as scratch:
            out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
            request = {"script": script, "argv0": argv0, "args": list(args), "cwd": str(cwd), "env": env,
                       "stdout": str(out), "stderr": str(err)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = int(self.process.stdout.readline())
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                code = int(self.process.stdout.readline())
            finally:
                timer.cancel()
            command = [argv0, *args]
            if timed_out.is_set():
                raise subprocess.TimeoutExpired(command, timeout)
            return subprocess.CompletedProcess(command, code, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))


_server: CommandServer | None = None


def _on_path(pythonpath: str) -> bool:
    """Whether every folder of a PYTHONPATH is on the server's path already (it has this process's path)."""
    return all(p in sys.path for p in pythonpath.split(os.pathsep) if p)


def run_command(script: str, argv0: str, args: list[str], cwd: Path, env: dict, timeout: float
                ) -> subprocess.CompletedProcess | None:
    """The command's result, or None where it must run as a real process (see REAL_PROCESS_ONLY)."""
    global _server
    if os.environ.get("DLTRAIN_TEST_REAL_PROCESSES") == "1" or any("launcher=joblib" in a for a in args) or any(
            env.get(k) != os.environ.get(k) and not (k == "PYTHONPATH" and _on_path(env[k])) for k in REAL_PROCESS_ONLY):
        return None
    if _server is None or _server.process.poll() is not None:
        _server = CommandServer()
    return _server.run(script, argv0, args, cwd, env, timeout)
