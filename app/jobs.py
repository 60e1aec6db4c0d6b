"""One device job at a time: the device gate shared by generation and training, and the training subprocess.

Generation requests are serialised by gradio's queue (one concurrency group for the device); a training job
runs for minutes to hours in a child process, so instead of occupying the queue it holds the gate, and a
generation that reaches the front of the queue meanwhile fails at once with a clear message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import motion_adapters
from motion_adapters.errors import MotionAdapterError

log = logging.getLogger(__name__)
GENERATION, TRAINING, LOADING = "generation", "training", "loading models"
CANCEL_GRACE_S = 10.0


class DeviceBusy(MotionAdapterError):
    """The device is held by another job."""


class DeviceGate:
    """A process-wide, non-blocking lock on the device, with the name of whoever holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None

    @property
    def owner(self) -> str | None:
        return self._owner

    def acquire(self, owner: str) -> None:
        if not self._lock.acquire(blocking=False):
            raise DeviceBusy(busy_message(self._owner))
        self._owner = owner

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        self.acquire(owner)
        try:
            yield
        finally:
            self.release()


def busy_message(owner: str | None) -> str:
    if owner == TRAINING:
        return ("a training job is running on the device: cancel it in the Train tab, or wait until it finishes "
                "and try again")
    return f"the device is busy ({owner or 'another job'}); try again when it finishes"


@dataclass
class TrainingJob:
    """A training run in a child process (``motion-adapters train CONFIG``) and what it has written so far."""

    name: str
    task: str
    out_dir: Path
    config_path: Path
    total_steps: int
    notes: list[str] = field(default_factory=list)   # what the app chose or changed (shown in the page)
    proc: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    returncode: int | None = None
    cancelled: bool = False
    _losses: list[tuple[int, float]] = field(default_factory=list)
    _log_offset: int = 0
    _read_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def log_path(self) -> Path:
        return self.out_dir / "train.log"

    @property
    def state(self) -> str:
        """running until the child has exited *and* its outputs are in the library (``ended`` is set last)."""
        if self.ended is None:
            return "running"
        if self.cancelled:
            return "cancelled"
        return "finished" if self.returncode == 0 else "failed"

    def losses(self) -> list[tuple[int, float]]:
        """(step, loss) pairs read so far from the trainer's ``log.jsonl`` (read incrementally)."""
        path = self.out_dir / "log.jsonl"
        with self._read_lock:  # several pages may follow the same job
            if path.exists():
                self._read_new_lines(path)
            return list(self._losses)

    def _read_new_lines(self, path: Path) -> None:
        with open(path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        for line in data[:end].decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                self._losses.append((int(rec["step"]), float(rec["loss"])))
            except (ValueError, KeyError, TypeError):
                continue
        self._log_offset += end

    def samples(self) -> list[Path]:
        """Validation clips written so far, oldest first."""
        folder = self.out_dir / "validation"
        return sorted(folder.glob("step-*.gif")) if folder.is_dir() else []

    def outputs(self) -> list[Path]:
        """The adapters (``*.safetensors``) and base folders the run wrote at its top level."""
        if not self.out_dir.is_dir():
            return []
        files = sorted(self.out_dir.glob("*.safetensors"))
        return files + ([self.out_dir / "base"] if (self.out_dir / "base").is_dir() else [])

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of ``train.log`` (the trainer's output, its progress bar included) as it is written."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
            text = f.read().decode(errors="replace")
        kept: list[str] = []
        for ln in text.replace("\r", "\n").splitlines():  # a progress bar's refreshes end in \r: one line each
            if ln.strip() and (not kept or ln.rstrip() != kept[-1]):
                kept.append(ln.rstrip())
        return "\n".join(kept[-lines:])

    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started


class TrainingRunner:
    """Starts at most one training process, holding the device gate until it exits; cancels it on request."""

    def __init__(self, gate: DeviceGate, on_exit: Callable[[TrainingJob], None] | None = None,
                 command: list[str] | None = None):
        self.gate = gate
        self.on_exit = on_exit
        self.command = command or [sys.executable, "-m", "motion_adapters", "train"]  # + the config path
        self.job: TrainingJob | None = None   # the running or last job
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.ended is None

    def start(self, job: TrainingJob, before_start: Callable[[], None] | None = None) -> TrainingJob:
        """Take the device and launch ``motion-adapters train job.config_path`` in its own process group."""
        with self._lock:
            if self.running:
                raise DeviceBusy("a training job is already running: cancel it first, or wait until it finishes")
            self.gate.acquire(TRAINING)
            try:
                if before_start is not None:
                    before_start()
                job.out_dir.mkdir(parents=True, exist_ok=True)
                logf = open(job.log_path, "ab")
                try:
                    job.proc = subprocess.Popen(
                        [*self.command, str(job.config_path)],
                        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(job.out_dir),
                        env=child_env(), start_new_session=os.name == "posix")
                finally:
                    logf.close()
            except BaseException:
                self.gate.release()
                raise
            job.started = time.time()
            self.job = job
        threading.Thread(target=self._watch, args=(job,), name=f"train-{job.name}", daemon=True).start()
        log.info("training %s started (pid %d)", job.name, job.proc.pid)
        return job

    def _watch(self, job: TrainingJob) -> None:
        """Wait for the child; then ``on_exit`` (the rescan), the device back, and only then the job reads as
        ended: a poll that sees "finished" always finds the outputs in the library."""
        rc = job.proc.wait()
        job.returncode = rc
        try:
            if self.on_exit is not None:
                self.on_exit(job)
        except Exception:  # never leave the gate held because a rescan failed
            log.exception("after training %s", job.name)
        finally:
            try:
                self.gate.release()
            finally:
                job.ended = time.time()
        log.info("training %s ended: %s (rc %s)", job.name, job.state, rc)

    def cancel(self, wait: float = CANCEL_GRACE_S) -> bool:
        """Terminate the running job's whole process group (SIGTERM, then SIGKILL). False if none runs."""
        job = self.job
        if job is None or job.ended is not None or job.proc is None:
            return False
        job.cancelled = True
        _signal_group(job.proc, signal.SIGTERM)
        try:
            job.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            _signal_group(job.proc, signal.SIGKILL)
            job.proc.wait()
        deadline = time.time() + 30
        while job.ended is None and time.time() < deadline:  # the watcher rescans, frees the device
            time.sleep(0.02)
        return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        else:  # pragma: no cover - no process groups
            proc.terminate() if sig == signal.SIGTERM else proc.kill()
    except ProcessLookupError:
        pass


def child_env() -> dict[str, str]:
    """The environment of a training child: ours, with this very toolkit first on its import path."""

    root = str(Path(motion_adapters.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")  # the trainer's lines reach train.log as they are printed
    env.setdefault("TQDM_MININTERVAL", "1")  # the progress bar: at most one refresh a second into the log file
    return env
