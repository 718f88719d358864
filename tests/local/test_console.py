"""The quiet console (launch/console.py): library warnings counted into ``logs/warnings.log``,
an actor process's output in ``logs/<role>_<i>.log``, a dead actor's error naming its log file,
log lines above the progress bar, and ``logging.verbose=true`` keeping today's console. The
whole path through real Ray actors is tests/launch/test_run_dir.py's real run."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import compose_fast, materialize

from miles_hydra.launch import console


@pytest.fixture
def console_stream():
    """A console handler on the root logger, as Hydra installs one."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _emit_everything() -> None:
    """What a run's driver sees: a Python warning, library records (loggers of a library that
    configures none of its own, as Ray and transformers may), one of ours."""
    warnings.warn("a torch-like deprecation", DeprecationWarning, stacklevel=1)
    logging.getLogger("somelib.startup").info("Started a local instance.")
    logging.getLogger("somelib.tokenization").warning("a library warning")
    logging.getLogger("somelib.tokenization").warning("a library warning")
    logging.getLogger("miles_hydra.launch.run").warning("our own advisory")
    logging.getLogger("somelib.startup").error("a library error")


def test_quiet_console_counts_library_warnings_once(
    tmp_path: Path, console_stream: io.StringIO, capsys
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with console.quiet_console(tmp_path, verbose=False):
            _emit_everything()
    shown = console_stream.getvalue()
    assert "our own advisory" in shown and "a library error" in shown
    assert "library warning" not in shown and "Started a local instance" not in shown
    path = tmp_path / console.LOG_DIR / console.WARNINGS_FILE
    lines = path.read_text().splitlines()
    assert len(lines) == 3, lines  # the DeprecationWarning and the library warning twice
    assert all(line.startswith("[driver] ") for line in lines)
    assert "DeprecationWarning: a torch-like deprecation" in lines[0]
    assert f"miles_hydra: 3 warnings (2 distinct), see {path}" in capsys.readouterr().out
    # the console is as before once the run is over
    logging.getLogger("somelib.tokenization").warning("after the run")
    assert "after the run" in console_stream.getvalue()


def test_summary_counts_only_this_attempt(tmp_path: Path) -> None:
    path = tmp_path / console.WARNINGS_FILE
    path.write_text("[driver] py.warnings WARNING: old\n")
    start = path.stat().st_size
    assert console.summary(path, start) is None
    with path.open("a") as f:
        f.write("[trainer] py.warnings WARNING: new\n[engine_0] py.warnings WARNING: new\n")
    assert console.summary(path, start) == f"miles_hydra: 2 warnings (1 distinct), see {path}"


def test_verbose_leaves_the_console_alone(
    tmp_path: Path, console_stream: io.StringIO, capsys
) -> None:
    with pytest.warns(DeprecationWarning, match="torch-like"):  # a Python warning, as ever
        with console.quiet_console(tmp_path, verbose=True):
            _emit_everything()
    assert "a library warning" in console_stream.getvalue()
    assert "Started a local instance" in console_stream.getvalue()
    assert "warnings" not in capsys.readouterr().out
    assert not (tmp_path / console.LOG_DIR).exists()


_ACTOR = """
import os, sys, warnings
from huggingface_hub.utils import are_progress_bars_disabled
from miles_hydra.launch.console import redirect_actor_output
path = redirect_actor_output("engine", numbered=True)
print("hello from stdout", flush=True)
os.write(2, b"raw stderr bytes\\n")
warnings.warn("an actor warning", UserWarning, stacklevel=1)
sys.__stdout__.flush()
os.write(int(sys.argv[1]), f"{path} {are_progress_bars_disabled()}".encode())
"""


def _run_actor(log_dir: Path) -> str:
    """What an actor's __init__ does first, in a process of its own; its answer on a pipe."""
    read, write = os.pipe()
    env = {**os.environ, console.ACTOR_LOG_DIR_ENV: str(log_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", _ACTOR, str(write)],
        env=env,
        pass_fds=(write,),
        capture_output=True,
        timeout=60,
    )
    os.close(write)
    with os.fdopen(read) as f:
        answer = f.read()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b"", (proc.stdout, proc.stderr)
    return answer


def test_actor_output_goes_to_its_own_file(tmp_path: Path) -> None:
    """stdout, raw fd 2 and warnings of an actor process: in engine_<i>.log (the first one no
    live process holds) and warnings.log, none on its original stdout/stderr; HF bars off."""
    logs = tmp_path / console.LOG_DIR
    logs.mkdir()
    held = os.open(logs / "engine_0.log", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live engine_0
    assert _run_actor(logs) == f"{logs / 'engine_1.log'} True"
    text = (logs / "engine_1.log").read_text()
    assert text.startswith("==== engine_1 actor ") and "hello from stdout" in text, text
    assert "raw stderr bytes" in text
    (line,) = (logs / console.WARNINGS_FILE).read_text().splitlines()
    assert line.startswith("[engine_1] py.warnings WARNING: ") and "an actor warning" in line
    os.close(held)


def test_log_files_are_claimed_by_live_actors_only(tmp_path: Path) -> None:
    """engine_<i>: the first file no live process holds, so a resumed run appends to the same
    files; the trainer's one file is shared rather than waited for."""
    held = os.open(tmp_path / "engine_0.log", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    path, fd = console._claim_log_file(tmp_path, "engine", numbered=True)
    assert path.name == "engine_1.log"
    os.close(fd)
    os.close(held)  # engine_0's process is gone
    path, fd = console._claim_log_file(tmp_path, "engine", numbered=True)
    assert path.name == "engine_0.log"
    again, fd2 = console._claim_log_file(tmp_path, "trainer", numbered=False)
    third, fd3 = console._claim_log_file(tmp_path, "trainer", numbered=False)
    assert again == third == tmp_path / "trainer.log"
    for f in (fd, fd2, fd3):
        os.close(f)


def test_a_dead_actor_names_its_log_file(tmp_path: Path) -> None:
    from ray.exceptions import RayActorError

    from miles_hydra.errors import ClusterError

    logs = tmp_path / console.LOG_DIR
    logs.mkdir()
    (logs / "engine_0.log").write_text("==== engine_0 actor aa pid 1 ====\nbuilt\n")
    (logs / "engine_1.log").write_text(
        "==== engine_1 actor bb pid 2 ====\nold attempt\n"
        "==== engine_1 actor cc pid 3 ====\n" + "".join(f"line {i}\n" for i in range(20))
    )
    try:
        raise ClusterError("rollout generation: a Ray actor died") from RayActorError("cc")
    except ClusterError as exc:
        note = console.dead_actor_note(exc, tmp_path)
    assert note is not None and note.startswith(f"its output is in {logs / 'engine_1.log'}")
    assert "line 19" in note and "line 9\n" not in note and "old attempt" not in note
    assert console.dead_actor_note(ClusterError("timeout"), tmp_path) is None


def test_ray_session_sends_actor_output_to_files_unless_verbose(tmp_path: Path, monkeypatch):
    """What ray_session asks of Ray (ray.init recorded, not started: the real run is
    tests/launch/test_run_dir.py): quiet, no log_to_driver and the actors' log directory in the
    job's env; verbose, Ray copies actor output to the console as before."""
    import ray

    from miles_hydra.backends.local.actors import ray_session

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for verbose in (False, True):
        cfg = materialize(compose_fast([f"logging.verbose={str(verbose).lower()}"]))
        with ray_session(cfg, tmp_path):
            pass
    quiet, verbose = calls
    assert quiet["log_to_driver"] is False
    logs = str(tmp_path.resolve() / console.LOG_DIR)
    assert quiet["runtime_env"] == {"env_vars": {console.ACTOR_LOG_DIR_ENV: logs}}
    assert verbose["log_to_driver"] is True and "runtime_env" not in verbose


def test_log_lines_print_above_the_progress_bar(console_stream: io.StringIO) -> None:
    """While the bar is up, the console handler prints through tqdm.write with its filters;
    after, the original handler is back."""
    from tqdm import tqdm

    root = logging.getLogger()
    (original,) = [h for h in root.handlers if getattr(h, "stream", None) is console_stream]
    original.addFilter(lambda record: "hidden" not in record.getMessage())
    with tqdm(total=2, file=console_stream) as bar, console.log_above_bar():
        assert original not in root.handlers
        logging.getLogger("miles_hydra.x").info("checkpoint step_000001")
        logging.getLogger("miles_hydra.x").info("hidden")
        bar.update(1)
    assert original in root.handlers
    lines = console_stream.getvalue().replace("\r", "\n").splitlines()
    assert "checkpoint step_000001" in lines and not any("hidden" in line for line in lines)
