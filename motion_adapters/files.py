"""Writing a user's files like any other tool does: never over something they own unless told, atomically
(a temp name beside the destination, then a rename), with the permissions their umask asks for, cleaning up
after a killed earlier write, and saying "disk full" when that is what went wrong."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from motion_adapters.errors import MotionAdapterError

log = logging.getLogger(__name__)
PARTIAL, OLD = "partial", "old"  # a write in progress; a replaced folder waiting to be deleted
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>partial|old)(?P<suffix>\.[^.]*)?$")
_DISK_FULL_TEXT = ("iostream error", "unexpected pos", "failed writing", "No space left", "code: 28",
                   "StorageFull", "file write failed")
NEARLY_FULL_BYTES = 256 * 2**20  # a write failure with less free than this is a full disk
RENAME_EXCHANGE = 2


class DiskFullError(MotionAdapterError):
    """A write failed because the disk (or the user's quota) is full."""

    def __init__(self, path: str | Path, free_bytes: int | None):
        self.path, self.free_bytes = Path(path), free_bytes
        free = "unknown space" if free_bytes is None else human_bytes(free_bytes)
        super().__init__(f"{path}: disk full — could not write it ({free} free on that disk); free some space "
                         "or write somewhere else")


def human_bytes(n: float) -> str:
    """``532 bytes``, ``12.0 MB``, ``88.5 GB``, ``1.2 TB`` (decimal units, as disks are sold)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def free_bytes(path: str | Path) -> int | None:
    """Free space on the disk holding ``path`` (its nearest existing parent), or None when unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


@contextmanager
def disk_full_guard(path: str | Path) -> Iterator[None]:
    """Turn a write that failed for lack of space into :class:`DiskFullError`; other errors pass unchanged.

    Besides ``OSError`` ENOSPC/EDQUOT this recognises the messages torch (``basic_ios::clear: iostream
    error``, ``unexpected pos``) and safetensors (``code: 28``) give for a full disk, when the disk is full.
    """
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(e.filename or path, free_bytes(path)) from e
        raise
    except Exception as e:
        free = free_bytes(path)
        if any(t in str(e) for t in _DISK_FULL_TEXT) and free is not None and free < NEARLY_FULL_BYTES:
            raise DiskFullError(path, free) from e
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give a file (or a folder and everything in it) we just wrote the permissions the umask asks for: some
    writers (safetensors, ``tempfile``) create 0600 files whatever the umask says."""
    mask = current_umask()
    if path.is_file():
        os.chmod(path, 0o666 & ~mask)
        return
    for root, _dirs, files in os.walk(path):  # every folder is a root once
        os.chmod(root, 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def temp_path(dst: str | Path, kind: str = PARTIAL) -> Path:
    """A hidden name beside ``dst`` that records who writes it: ``.NAME.PID-TOKEN.partial.SUFFIX`` (the
    suffix kept, for writers that choose the format by it)."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}{dst.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_stale_temps(dst: str | Path) -> list[Path]:
    """Remove what killed earlier writes of ``dst`` left beside it; a replaced folder whose successor never
    arrived is put back. Temp names of live processes are left alone. Returns what was removed."""
    dst = Path(dst)
    if not dst.parent.is_dir():
        return []
    removed = []
    for p in sorted(dst.parent.glob(f".{glob.escape(dst.name)}.*")):
        m = _TEMP.match(p.name)
        if not m or m["name"] != dst.name or _alive(int(m["pid"])):
            continue
        if m["kind"] == OLD and not os.path.lexists(dst):
            os.rename(p, dst)  # the swap was killed between its two renames: the old folder is complete
            log.warning("%s: restored from %s (an earlier replacement was interrupted)", dst, p.name)
            continue
        _remove(p)
        removed.append(p)
    if removed:
        log.info("%s: removed %d leftover temp file(s) of an interrupted write", dst, len(removed))
    return removed


def check_destination(dst: str | Path, *, overwrite: bool, label: str, want_dir: bool,
                      replaceable: Callable[[Path], bool] | None = None,
                      sources: tuple[str | Path, ...] = ()) -> Path:
    """Refuse to write ``dst`` over something the user did not ask to replace.

    ``dst`` must not be one of ``sources``; an existing ``dst`` needs ``overwrite``, must be of the kind
    written (file or folder), and a folder only is replaced when it is empty or ``replaceable`` says it is
    one this command writes (a model folder, a PNG-frame folder), never an arbitrary folder.
    """
    dst = Path(dst)
    for src in sources:
        if same_file(dst, Path(src)):
            raise MotionAdapterError(f"{label} {dst}: expected a path other than the input's, found the input itself")
    if not os.path.lexists(dst):
        return dst
    is_dir = dst.is_dir() and not dst.is_symlink()
    if is_dir and not want_dir:
        raise MotionAdapterError(f"{label} {dst}: expected a file name, found a folder")
    if not is_dir and want_dir:
        raise MotionAdapterError(f"{label} {dst}: expected a folder name, found a file")
    if not overwrite:
        raise MotionAdapterError(f"{label} {dst}: exists already; expected a new name, or --overwrite to replace it")
    if is_dir:
        entries = list(dst.iterdir())
        if entries and not (replaceable and replaceable(dst)):
            sample = ", ".join(sorted(e.name for e in entries)[:3])
            raise MotionAdapterError(
                f"{label} {dst}: expected an empty folder or one this command writes to replace, found a folder "
                f"with other files ({sample}{', …' if len(entries) > 3 else ''}); it is left alone even with "
                "--overwrite: choose a new name")
    return dst


def same_file(a: Path, b: Path) -> bool:
    """Both exist and are the same file or folder (hard links and symlinks included)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def only_names(names: set[str] | frozenset[str], pattern: str | None = None) -> Callable[[Path], bool]:
    """``replaceable`` for :func:`check_destination`: a folder whose entries are all in ``names`` (or match
    ``pattern``), i.e. one we would write ourselves."""
    rx = re.compile(pattern) if pattern else None

    def check(folder: Path) -> bool:
        return all(e.name in names or (rx is not None and rx.fullmatch(e.name)) for e in folder.iterdir())

    return check


@contextmanager
def atomic_file(dst: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``dst``; on success it is renamed onto ``dst``, on failure removed.

    The temp file is created by the writer (no ``mkstemp``), so the umask applies; temp files of killed
    earlier writes of ``dst`` are removed first.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dst)
    tmp = temp_path(dst)
    try:
        with disk_full_guard(dst):
            yield tmp
            apply_umask(tmp)
            os.replace(tmp, dst)
    except BaseException:
        _remove(tmp)
        raise


def atomic_dir(dst: str | Path, write: Callable[[Path], None], *, overwrite: bool = False, label: str = "DST",
               replaceable: Callable[[Path], bool] | None = None,
               sources: tuple[str | Path, ...] = ()) -> Path:
    """Write a folder with ``write(tmp)`` beside ``dst``, then put it in place in one step.

    An existing ``dst`` is replaced only with ``overwrite`` (see :func:`check_destination`): the new folder
    and the old one are exchanged atomically (Linux ``renameat2``; elsewhere two renames, and a kill between
    them is repaired on the next write), then the old one is deleted. At any moment ``dst`` is the old folder
    or the new one, complete.
    """
    dst = Path(dst)
    check_destination(dst, overwrite=overwrite, label=label, want_dir=True, replaceable=replaceable,
                      sources=sources)
    dst.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dst)
    tmp = temp_path(dst)
    try:
        tmp.mkdir()
        with disk_full_guard(dst):
            write(tmp)
        apply_umask(tmp)
        if dst.exists():
            old = tmp if _exchange(tmp, dst) else _swap_by_renames(tmp, dst)
            _remove(old)
        else:
            os.rename(tmp, dst)
    except BaseException:
        _remove(tmp)
        raise
    return dst


def _swap_by_renames(new: Path, dst: Path) -> Path:
    old = temp_path(dst, OLD)
    os.rename(dst, old)
    os.rename(new, dst)
    return old


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    return False  # e.g. a file system without exchange support: fall back to two renames


def _renameat2():
    if not hasattr(_renameat2, "fn"):
        fn = None
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True) if name else None
            fn = getattr(libc, "renameat2", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except OSError:
            fn = None
        _renameat2.fn = fn
    return _renameat2.fn
