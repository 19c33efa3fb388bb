"""Prediction log: what a server was asked and what it answered, as rotating JSON Lines.

``inferno serve --log-predictions DIR`` keeps a summary of each served request's inputs and
its outputs, for offline analysis (drift, error hunting) and for retraining. The log must
never hurt serving, which shapes everything here:

* It is written from background monitoring threads, never from the request path, so a slow
  disk delays only the log. Several threads may share one log; a lock orders them.
* ``max_bytes`` is a hard bound on what the log keeps on disk, so a server that runs for
  months cannot fill the disk: files rotate at ``file_bytes`` and the oldest are deleted
  first, just before a new line would pass the budget. Files left by an earlier run in the
  same folder count too, and go first.
* An I/O failure (disk full, folder removed) is counted in ``errors`` and logged once per
  kind, never raised: the next write reopens a file (recreating the folder) and carries on.
  A file removed under the log is noticed, since writes to it would silently vanish. A
  write that fails part-way may leave that file's last line incomplete: readers skip it.
* Each ``write()`` ends with its lines handed to the OS, so a reader tailing the newest file
  sees whole lines. There is no fsync: the log is best effort, not a journal.

Only files named ``predictions-YYYYmmddTHHMMSSZ-NNNNNN.jsonl`` belong to the log (the UTC
time of creation and a counter, so names sort in creation order even within one second);
anything else in the folder is the user's and is never counted or deleted. One log per
folder: two logs in one folder would delete each other's files.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from inferno.errors import ConfigError

logger = logging.getLogger(__name__)

MIN_BYTES = 64 * 1024
"""The smallest budget accepted (64 KiB), and the smallest default file size."""

_NAME = re.compile(r"predictions-\d{8}T\d{6}Z-(\d{6})\.jsonl")
_COUNTER_END = 1_000_000  # six digits in the name
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class _IOFailure(Exception):
    """An ``OSError`` with what the log was doing, carried up to ``write()``."""

    def __init__(self, action: str, cause: OSError) -> None:
        super().__init__(action, cause)
        self.action = action
        self.cause = cause


@contextlib.contextmanager
def _io(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _IOFailure(action, exc) from exc


def _default(obj: Any) -> Any:
    """What ``OPT_SERIALIZE_NUMPY`` leaves out: other numpy scalars, strided or odd-dtype arrays."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    # .item() keeps long doubles as numpy scalars, so convert by kind
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"expected a JSON value or numpy data, got {type(obj).__name__}")


def _size_on_disk(path: Path, unknown: int) -> int | None:
    """The size of ``path``; None when it is gone, ``unknown`` when it cannot be read."""
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return unknown


class PredictionLog:
    """JSON Lines files in one folder, rotated at ``file_bytes``, ``max_bytes`` in all.

    Thread-safe. ``written`` counts the records handed to the OS; ``errors`` counts failures
    (an I/O error, a record that cannot be serialized or is larger than the budget), each
    kind logged once as a warning.
    """

    def __init__(self, folder: Path, max_bytes: int, file_bytes: int | None = None) -> None:
        """Open the log in ``folder``, creating the folder (with its parents) if needed.

        Args:
            folder: where the files go; may hold other files, which are left alone.
            max_bytes: the disk budget of all the log's files together, at least 64 KiB.
            file_bytes: start a new file when the current one would pass this size; by
                default an eighth of the budget but at least 64 KiB, never above it.

        Raises:
            ConfigError: a budget below 64 KiB, a ``file_bytes`` outside 1..``max_bytes``, or
                a folder that cannot be created, listed or written to.
        """
        if max_bytes < MIN_BYTES:
            raise ConfigError(
                f"prediction log max_bytes: expected at least {MIN_BYTES} (64 KiB), got {max_bytes}"
            )
        if file_bytes is None:
            file_bytes = min(max(max_bytes // 8, MIN_BYTES), max_bytes)
        elif not 0 < file_bytes <= max_bytes:
            raise ConfigError(
                f"prediction log file_bytes: expected 1 to max_bytes={max_bytes}, got {file_bytes}"
            )
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.errors = 0
        self.written = 0
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0  # bytes given to the current file
        self._pending = 0  # records given to the current file since its last flush
        self._old: deque[tuple[Path, int]] = deque()  # closed files with sizes, oldest first
        self._old_total = 0
        self._counter = 0
        self._adopt_folder()

    def _adopt_folder(self) -> None:
        """Check the folder, take over an earlier run's files and trim them to the budget."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
            earlier = sorted(
                p for p in self.folder.iterdir() if _NAME.fullmatch(p.name) and p.is_file()
            )
        except OSError as exc:
            raise ConfigError(
                f"prediction log folder {self.folder}: expected a writable folder, "
                f"got {exc.strerror or exc}"
            ) from exc
        for path in earlier:
            size = _size_on_disk(path, unknown=0)
            if size is not None:
                self._old.append((path, size))
                self._old_total += size
        if earlier:
            last = _NAME.fullmatch(earlier[-1].name)
            if last is not None:
                self._counter = (int(last.group(1)) + 1) % _COUNTER_END
        try:
            self._make_room(0)
        except _IOFailure as failure:
            self._fail_io(failure)

    @property
    def files(self) -> list[Path]:
        """The log's files, oldest first, the one being written last."""
        with self._lock:
            files = [path for path, _ in self._old]
            if self._path is not None:
                files.append(self._path)
            return files

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append one JSON line per record and flush them to the OS; a no-op after ``close()``.

        Numpy arrays and scalars are written as JSON numbers and lists. Deletes the oldest
        files as needed to stay within ``max_bytes``. Never raises for I/O failures or bad
        records: they are counted in ``errors`` and the next call tries again.
        """
        if self._closed:
            return
        lines: list[bytes] = []
        bad: list[str] = []
        for record in records:  # serialized outside the lock: other threads keep writing
            try:
                lines.append(orjson.dumps(record, default=_default, option=_OPTIONS))
            except orjson.JSONEncodeError as exc:
                bad.append(str(exc))
        with self._lock:
            if self._closed:
                return
            for reason in bad:
                self._fail("serialize", f"a record was dropped: it cannot be serialized: {reason}")
            if not lines:
                return
            try:
                self._append(lines)
            except _IOFailure as failure:
                self._fail_io(failure)
                self._drop_file()

    def close(self) -> None:
        """Flush and close the current file. Idempotent; later writes are no-ops."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._file is None:
                return
            try:
                self._close_file()
            except _IOFailure as failure:
                self._fail_io(failure)
                self._drop_file()

    def _append(self, lines: list[bytes]) -> None:
        if self._file is not None and self._current_was_removed():
            self._fail("removed", f"{self._path} was removed while open; starting a new file")
            self._drop_file()
        for line in lines:
            size = len(line)
            if size > self.max_bytes:
                self._fail(
                    "oversize",
                    f"a record was dropped: its line of {size} bytes is over max_bytes={self.max_bytes}",
                )
                continue
            if self._file is not None and self._size > 0 and self._size + size > self.file_bytes:
                self._close_file()
            file = self._file if self._file is not None else self._open_file()
            self._make_room(size)
            with _io("write to a file in"):
                file.write(line)
            self._size += size
            self._pending += 1
        self._flush()

    def _current_was_removed(self) -> bool:
        """Whether the open file lost its name; writes to it would vanish with no error."""
        if self._file is None:
            return False
        with _io("check the current file in"):
            return os.fstat(self._file.fileno()).st_nlink == 0

    def _open_file(self) -> IO[bytes]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        with _io("create a file in"):
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(_COUNTER_END):
                path = self.folder / f"predictions-{stamp}-{self._counter:06d}.jsonl"
                self._counter = (self._counter + 1) % _COUNTER_END
                try:  # O_EXCL: never append to (or overwrite) a file of an earlier run
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
                except FileExistsError:
                    continue
                break
            else:
                raise FileExistsError(
                    errno.EEXIST, "every counter value is taken", str(self.folder)
                )
            file = os.fdopen(fd, "ab")
        self._file = file
        self._path = path
        self._size = 0
        self._pending = 0
        return file

    def _flush(self) -> None:
        if self._file is None:
            return
        with _io("write to a file in"):
            self._file.flush()
        self.written += self._pending
        self._pending = 0

    def _close_file(self) -> None:
        """Flush and close the current file; it joins the old files."""
        self._flush()
        if self._file is not None:
            with _io("close a file in"):
                self._file.close()
        if self._path is not None:
            self._old.append((self._path, self._size))
            self._old_total += self._size
        self._file = None
        self._path = None
        self._size = 0

    def _make_room(self, size: int) -> None:
        """Delete the oldest files until ``size`` more bytes fit in the budget."""
        while self._old and self._old_total + self._size + size > self.max_bytes:
            path, old_size = self._old[0]
            with _io("delete an old file in"):
                path.unlink(missing_ok=True)
            self._old.popleft()
            self._old_total -= old_size

    def _drop_file(self) -> None:
        """After a failure: let go of the current file and forget files that are gone."""
        file, path, size = self._file, self._path, self._size
        self._file = None
        self._path = None
        self._size = 0
        self._pending = 0
        if file is not None:
            # the failure is already counted; lines still in the buffer are lost with it
            with contextlib.suppress(OSError):
                file.close()
        if path is not None:
            self._old.append((path, size))
        kept: deque[tuple[Path, int]] = deque()
        for old, recorded in self._old:
            on_disk = _size_on_disk(old, unknown=recorded)
            if on_disk is not None:
                kept.append((old, on_disk))
        self._old = kept
        self._old_total = sum(on_disk for _, on_disk in kept)

    def _fail_io(self, failure: _IOFailure) -> None:
        code = errno.errorcode.get(failure.cause.errno or 0, type(failure.cause).__name__)
        self._fail(f"{failure.action} ({code})", f"cannot {failure.action} it: {failure.cause}")

    def _fail(self, kind: str, detail: str) -> None:
        """Count a failure; warn the first time each kind happens."""
        self.errors += 1
        if kind in self._warned:
            logger.debug("prediction log %s: %s", self.folder, detail)
            return
        self._warned.add(kind)
        logger.warning(
            "prediction log %s: %s (counted; further failures of this kind are not logged)",
            self.folder,
            detail,
        )
