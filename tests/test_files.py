"""Writing a user's files: never over their files unasked, atomic, umask-respecting, cleaned up after a kill,
"disk full" said as such; and `convert --overwrite` killed at every step leaves the old or the new folder."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motion_adapters import files
from motion_adapters.convert import convert
from motion_adapters.errors import MotionAdapterError
from motion_adapters.files import (
    DiskFullError,
    atomic_dir,
    atomic_file,
    check_destination,
    clean_stale_temps,
    disk_full_guard,
    temp_path,
)
from motion_adapters.io import save_safetensors_atomic


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stale(dst: Path, kind: str = files.PARTIAL) -> Path:
    """A temp name of ``dst`` as a killed writer (a dead pid) leaves it."""
    name = temp_path(dst, kind).name
    return dst.with_name(name.replace(f".{os.getpid()}-", f".{dead_pid()}-"))


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        h.update(str(f.relative_to(folder)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ destinations
def test_check_destination_refuses_what_the_user_did_not_ask_to_replace(tmp_path):
    f, d, precious = tmp_path / "a.safetensors", tmp_path / "folder", tmp_path / "mine"
    f.write_bytes(b"x")
    d.mkdir()
    (d / "config.json").write_text("{}")
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    ours = files.only_names({"config.json"})
    cases = [
        (dict(dst=f, overwrite=False, want_dir=False), "exists already; expected a new name, or --overwrite"),
        (dict(dst=f, overwrite=True, want_dir=False, sources=(f,)), "found the input itself"),
        (dict(dst=d, overwrite=True, want_dir=False), "expected a file name, found a folder"),
        (dict(dst=f, overwrite=True, want_dir=True), "expected a folder name, found a file"),
        (dict(dst=precious, overwrite=True, want_dir=True, replaceable=ours), "thesis.tex"),
    ]
    for kw, message in cases:
        with pytest.raises(MotionAdapterError, match="DST") as e:
            check_destination(label="DST", **kw)
        assert message in str(e.value)
    assert check_destination(f, overwrite=True, label="DST", want_dir=False) == f
    assert check_destination(d, overwrite=True, label="DST", want_dir=True, replaceable=ours) == d
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_outputs_respect_the_umask(tmp_path, umask022):
    f = save_safetensors_atomic({"a": torch.zeros(2)}, tmp_path / "a.safetensors")  # safetensors alone: 0600
    assert f.stat().st_mode & 0o777 == 0o644

    def write(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        save_safetensors_atomic({"a": torch.zeros(2)}, tmp / "sub" / "w.safetensors")

    d = atomic_dir(tmp_path / "model", write)
    assert d.stat().st_mode & 0o777 == 0o755
    assert (d / "sub").stat().st_mode & 0o777 == 0o755
    assert (d / "sub" / "w.safetensors").stat().st_mode & 0o777 == 0o644
    os.umask(0o077)
    g = save_safetensors_atomic({"a": torch.zeros(2)}, tmp_path / "private.safetensors")
    assert g.stat().st_mode & 0o777 == 0o600


def test_a_killed_writers_temp_files_are_removed_by_the_next_write(tmp_path):
    dst = tmp_path / "clip.safetensors"
    left = stale(dst)
    left.write_bytes(b"\0" * 4096)
    alive = temp_path(dst)  # this process's: a write in progress, never touched
    alive.write_bytes(b"busy")
    other = tmp_path / ".clip.safetensors.tmp"  # not our pattern: left alone
    other.write_bytes(b"?")
    save_safetensors_atomic({"a": torch.ones(1)}, dst)
    assert not left.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, alive.name, other.name])


def test_a_swap_killed_between_its_renames_is_repaired(tmp_path):
    dst = tmp_path / "model"
    old = stale(dst, files.OLD)
    old.mkdir()
    (old / "config.json").write_text('{"old": true}')
    half = stale(dst)
    half.mkdir()
    assert clean_stale_temps(dst) == [half]
    assert (dst / "config.json").read_text() == '{"old": true}' and not old.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_replaces_a_model_folder_only_with_overwrite(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    dst = tmp_path / "model"
    atomic_dir(dst, lambda t: (t / "config.json").write_text("1"))
    with pytest.raises(MotionAdapterError, match="exists already"):
        atomic_dir(dst, lambda t: (t / "config.json").write_text("2"))
    atomic_dir(dst, lambda t: (t / "config.json").write_text("2"), overwrite=True,
               replaceable=files.only_names({"config.json"}))
    assert (dst / "config.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    def fail(t: Path) -> None:
        (t / "config.json").write_text("3")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_dir(dst, fail, overwrite=True, replaceable=files.only_names({"config.json"}))
    assert (dst / "config.json").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_disk_full_is_said_with_the_path_and_the_free_space(tmp_path, monkeypatch):
    dst = tmp_path / "big.safetensors"
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: _usage(12_000_000))
    for exc in (OSError(errno.ENOSPC, "No space left on device"),
                RuntimeError("basic_ios::clear: iostream error"),
                RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 0")):
        with pytest.raises(DiskFullError) as e, disk_full_guard(dst):
            raise exc
        assert str(e.value) == (f"{dst}: disk full — could not write it (12.0 MB free on that disk); free some "
                                "space or write somewhere else")
    with pytest.raises(RuntimeError, match="shape mismatch"), disk_full_guard(dst):
        raise RuntimeError("shape mismatch")  # not a write failure: unchanged
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: _usage(50_000_000_000))
    with pytest.raises(RuntimeError, match="iostream"), disk_full_guard(dst):
        raise RuntimeError("basic_ios::clear: iostream error")  # plenty of space: not a full disk

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError), atomic_file(dst) as tmp:
        tmp.write_bytes(b"partial")
        full()
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def _usage(free: int):
    return type("usage", (), {"free": free, "total": 10 * free, "used": 9 * free})()


# -------------------------------------------------------------------------- convert killed at each step
KILL_AT = {
    # the new folder written, not yet swapped in
    "before-swap": "files.apply_umask = kill_after(files.apply_umask)",
    # renameat2 exchanged them: the new folder is in place, the old one not yet deleted
    "after-exchange": "files._exchange = kill_after(files._exchange)",
    # no renameat2: killed between moving the old folder aside and moving the new one in
    "between-renames": "files._exchange = lambda a, b: False\n"
                       "calls = []\n"
                       "real = os.rename\n"
                       "def rename(a, b):\n"
                       "    real(a, b)\n"
                       "    calls.append(a)\n"
                       "    if len(calls) == 1: os.kill(os.getpid(), signal.SIGKILL)\n"
                       "os.rename = rename",
    # deleting the old folder: half of it gone
    "deleting-old": "real_remove = files._remove\n"
                    "def remove(p):\n"
                    "    next(f for f in p.rglob('*') if f.is_file()).unlink()\n"
                    "    os.kill(os.getpid(), signal.SIGKILL)\n"
                    "files._remove = remove",
}
CHILD = """
import os, signal, sys
from motion_adapters import files
from motion_adapters.convert import convert
def kill_after(fn):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapped
{patch}
convert(sys.argv[1], sys.argv[2], "diffusers", overwrite=True)
"""


@pytest.fixture(scope="module")
def old_and_new(tiny, tmp_path_factory):
    """Two different motion modules, and the diffusers folder of the first one (what the user has)."""
    root = tmp_path_factory.mktemp("kill")
    old = convert(tiny.mm_a_orig, root / "old-model", "diffusers")
    new = convert(tiny.mm_b_ckpt, root / "new-model", "diffusers")
    assert tree_digest(old) != tree_digest(new)
    return tiny.mm_b_ckpt, tree_digest(old), tree_digest(new), old


@pytest.mark.parametrize("step", sorted(KILL_AT))
def test_convert_overwrite_killed_at_any_step_leaves_the_old_or_the_new_folder(old_and_new, tmp_path, step):
    src, old_digest, new_digest, old_folder = old_and_new
    dst = tmp_path / "model"
    subprocess.run(["cp", "-r", str(old_folder), str(dst)], check=True)
    child = subprocess.run([sys.executable, "-c", CHILD.format(patch=KILL_AT[step]), str(src), str(dst)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-2000:]
    if dst.exists():  # the old one, or the new one: complete either way
        assert tree_digest(dst) in (old_digest, new_digest), step
    else:  # only in the instant between two renames: the old folder waits beside, complete
        assert step == "between-renames"
    convert(src, dst, "diffusers", overwrite=True)  # the next write repairs and cleans up
    assert tree_digest(dst) == new_digest
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "a killed write's temp files were left behind"
