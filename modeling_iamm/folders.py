"""Output folders that jobs write into: one job at a time per folder (:class:`FolderLock`), a clear error when the
folder is a file (:func:`ensure_folder`) and when the disk fills up while saving (:func:`explain_disk_full`), and no
empty folder left behind by a command that failed (:func:`removed_if_left_empty`)."""

import errno
import json
import logging
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

try:
    import fcntl
except ImportError:  # not POSIX: the lock falls back to an exclusively created file and a check of its pid
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD: Dict[str, int] = {}  # lock files this process holds -> nesting depth


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock; the message says which (pid, host, start time)."""


class DiskFullError(OSError):
    """A save ran out of disk space; the message names the path and the space left."""


LORA_PATH_KEYS = ("model_name_or_path", "tokenizer_name_or_path", "data_dir")
"""The fields of an IAMM_large adapter's `lora_args.json` that name a model or a data folder (recorded with
:func:`recorded_location`, read back by the adapter push)."""


def recorded_location(name: str, record_folder: str) -> str:
    """How a record written into `record_folder` (`build_info.json`, `lora_args.json`) names a model or data source
    given as `name`: a local path relative to `record_folder` (so the record names no absolute path of this
    machine, and still leads to the source when the two folders move together); anything else (a Hub id) as
    given."""
    if not name:
        return name
    path = os.path.expanduser(name)
    if not (os.path.exists(path) or os.path.isabs(path)):
        return name
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(record_folder)).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): the folder's name only
        return os.path.basename(os.path.normpath(path))


def ensure_folder(path: str, flag: str = "--output_dir") -> None:
    """Create the folder `path` (and its parents) unless it exists; a file in its place is a `NotADirectoryError`
    that says so (instead of a bare `FileExistsError`)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder: pass a folder path (it is created if needed)")
    os.makedirs(path, exist_ok=True)


@contextmanager
def removed_if_left_empty(path: str) -> Iterator[None]:
    """Remove the folder `path` again when the block fails and leaves it empty, if it did not exist before: a command
    refused after it created its output folder leaves nothing behind (a folder holding anything is kept)."""
    existed = os.path.exists(path)
    try:
        yield
    except BaseException:
        if not existed and os.path.isdir(path) and not os.listdir(path):
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise


def _describe(holder: Dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OSError):
        return True  # a process we may not signal, or an unreadable pid: assume it is alive
    return True


class FolderLock:
    """An exclusive lock on a folder, held while this process writes there: a `.lock` file records who holds it
    (pid, host, start time, command) and is removed on release.

    A second holder gets a :class:`FolderLockedError` naming the first; within one process the lock nests (a
    caller may hold it around a function that takes it again). On POSIX the file carries an OS lock
    (`flock`) that the system drops when its process dies, however it dies (even SIGKILL): a `.lock` left by a dead
    process is then taken over, with a warning naming it. Elsewhere the file is created exclusively and a lock
    whose pid no longer runs on this host is taken over the same way.

        with FolderLock("eval/valid", "evaluation"):
            ...  # write into eval/valid
    """

    def __init__(self, folder: str, purpose: str = "job"):
        self.folder, self.purpose = folder, purpose
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None
        self._nested = False

    def _record(self) -> bytes:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:300]}
        return (json.dumps(holder) + "\n").encode()

    @staticmethod
    def _read(fd: int) -> Dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 1 << 16)
        try:
            value = json.loads(raw.decode("utf-8", "replace")) if raw.strip() else {}
        except ValueError:
            value = {"pid": "?", "host": "?", "started": "?", "command": raw[:80].decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {}

    def _busy(self, holder: Dict[str, Any]) -> FolderLockedError:
        return FolderLockedError(
            f"{self.folder} is in use by another {holder.get('purpose') or self.purpose}: {_describe(holder)} holds "
            f"{self.path}; wait for it to end or choose another output folder (two jobs in one folder would mix "
            f"their files)")

    def _taking_over(self, holder: Dict[str, Any]) -> None:
        logger.warning("%s: taking over the lock left by %s, which is no longer running (it ended without "
                       "releasing it)", self.path, _describe(holder))

    def acquire(self) -> "FolderLock":
        """Take the lock (creating the folder if needed) or raise :class:`FolderLockedError`."""
        if self._fd is not None or self._nested:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        key = os.path.realpath(self.path)
        if key in _HELD:  # this process holds it already (an outer FolderLock)
            _HELD[key] += 1
            self._nested = True
            return self
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = self._open()
            if fd is not None:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, self._record())
                os.fsync(fd)
                self._fd, _HELD[key] = fd, 1
                return self

    def _open(self) -> Optional[int]:
        """One attempt: the locked file descriptor, or None to try again (the lock changed hands meanwhile)."""
        if fcntl is None:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = os.open(self.path, os.O_RDONLY)
                holder = self._read(fd)
                os.close(fd)
                if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
                    self._taking_over(holder)
                    os.remove(self.path)
                    return None
                raise self._busy(holder) from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._read(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise self._busy(holder) from None
        try:  # the holder we waited for may have removed the file: then this lock is on a file nobody sees
            current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if not current:
            os.close(fd)
            return None
        holder = self._read(fd)
        if holder:  # locked by nobody yet written by someone: its process died holding it
            self._taking_over(holder)
        return fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if not held)."""
        key = os.path.realpath(self.path)
        if self._nested:
            _HELD[key] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        _HELD.pop(key, None)
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.remove(self.path)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _free_space(path: str) -> str:
    folder = os.path.abspath(path)
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:.1f} MiB"


DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write that ran out of space: `ENOSPC`/`EDQUOT`, torch's zip writer's short write
    (`RuntimeError: ... unexpected pos N vs M`, what `torch.save` raises on a full disk), or safetensors' writer
    (`SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)`, what
    `save_pretrained` raises on a full disk)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(error, RuntimeError) and ("unexpected pos" in str(error) or "file write failed" in str(error)):
        return True
    from safetensors import SafetensorError

    return isinstance(error, SafetensorError) and any(f"(os error {n})" in str(error) for n in DISK_FULL_ERRNOS)


@contextmanager
def explain_disk_full(path: str, hint: str = "") -> Iterator[None]:
    """Turn a save that runs out of space (see :func:`is_disk_full`) into a :class:`DiskFullError` naming `path`
    and the space left on its disk; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(errno.ENOSPC, f"no space left on the disk while writing {path} ({_free_space(path)} "
                                          f"free there; {type(e).__name__}: {str(e).strip()[:120]}){hint}") from e
