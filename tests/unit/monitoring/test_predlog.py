"""PredictionLog on real files in tmp_path: JSON Lines, rotation, the disk budget, failures."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from inferno.errors import ConfigError
from inferno.monitoring.predlog import MIN_BYTES, PredictionLog

NAME = re.compile(r"predictions-\d{8}T\d{6}Z-\d{6}\.jsonl")
KIB = 1024


def log_files(folder: Path) -> list[Path]:
    """The log's files on disk, by name (which is creation order)."""
    return sorted(p for p in folder.iterdir() if NAME.fullmatch(p.name) and p.is_file())


def on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in log_files(folder))


def read_records(files: list[Path]) -> list[dict[str, Any]]:
    """Every line of ``files`` in order; fails on an incomplete or invalid line."""
    records: list[dict[str, Any]] = []
    for path in files:
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends with an incomplete line"
        records.extend(orjson.loads(line) for line in data.splitlines())
    return records


def record(i: int) -> dict[str, Any]:
    return {"id": i, "inputs": {"x": [0.25] * 8}, "outputs": {"label": "cat", "score": 0.9}}


def test_lines_round_trip_records_with_numpy_values(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log", max_bytes=MIN_BYTES)
    records: list[dict[str, Any]] = [
        {
            "matrix": np.arange(6, dtype=np.float32).reshape(2, 3),
            "strided": np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2],
            "f32": np.float32(0.5),
            "i64": np.int64(-7),
            "long": np.longdouble(1.25),
            "longs": np.array([0.5, 2.0], dtype=np.longdouble),
            "flag": np.bool_(True),
            "text": "héllo",
        },
        {"plain": [1, None, {"a": 2.5}]},
    ]
    log.write(records)
    # read before close: write() must already have flushed whole lines to the OS
    assert read_records(log.files) == [
        {
            "matrix": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
            "strided": [[0, 2], [3, 5]],
            "f32": 0.5,
            "i64": -7,
            "long": 1.25,
            "longs": [0.5, 2.0],
            "flag": True,
            "text": "héllo",
        },
        {"plain": [1, None, {"a": 2.5}]},
    ]
    assert (log.written, log.errors) == (2, 0)
    log.close()


def test_default_file_size_is_an_eighth_of_the_budget_within_bounds(tmp_path: Path) -> None:
    assert PredictionLog(tmp_path / "a", max_bytes=8 * MIN_BYTES * 4).file_bytes == 4 * MIN_BYTES
    assert PredictionLog(tmp_path / "b", max_bytes=2 * MIN_BYTES).file_bytes == MIN_BYTES
    assert PredictionLog(tmp_path / "c", max_bytes=MIN_BYTES).file_bytes == MIN_BYTES


def test_files_rotate_and_the_budget_holds_after_every_write(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES, file_bytes=8 * KIB)
    seen: list[Path] = []
    for i in range(0, 3000, 3):
        log.write([record(i), record(i + 1), record(i + 2)])
        assert on_disk(folder) <= MIN_BYTES
        assert log.files == log_files(folder)
        assert all(p.stat().st_size <= 8 * KIB for p in log.files)
        seen.extend(p for p in log.files if p not in seen)
    assert len(seen) > 20, "expected many rotations"
    assert not seen[0].exists(), "expected the budget to have deleted files"
    assert (log.written, log.errors) == (3000, 0)
    log.close()


def test_oldest_files_go_first_so_the_newest_records_stay(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES, file_bytes=4 * KIB)
    created: list[Path] = []
    for i in range(2000):
        log.write([record(i)])
        created.extend(p for p in log.files if p not in created)
    log.close()
    kept = log_files(folder)
    assert kept == created[-len(kept) :], "the kept files must be the newest ones"
    assert sorted(created) == created, "names must sort in creation order"
    ids = [r["id"] for r in read_records(kept)]
    assert ids == list(range(2000 - len(ids), 2000))
    assert MIN_BYTES - 4 * KIB < on_disk(folder) <= MIN_BYTES, (
        "the budget should be used, not wasted"
    )


def test_foreign_files_are_never_deleted_nor_counted(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    foreign = {
        "notes.txt": b"x" * (2 * MIN_BYTES),  # over the budget: it must not count
        "predictions-old.jsonl": b"a\n",
        "predictions-20200101T000000Z-1.jsonl": b"b\n",
        "predictions-20200101T000000Z-000001.jsonl.gz": b"c\n",
        "Predictions-20200101T000000Z-000002.jsonl": b"d\n",
    }
    for name, data in foreign.items():
        (folder / name).write_bytes(data)
    lookalike = folder / "predictions-20200101T000000Z-000003.jsonl"
    lookalike.mkdir()
    (lookalike / "inside.txt").write_bytes(b"e\n")
    log = PredictionLog(folder, max_bytes=MIN_BYTES, file_bytes=8 * KIB)
    for i in range(1500):
        log.write([record(i)])
    log.close()
    for name, data in foreign.items():
        assert (folder / name).read_bytes() == data
    assert (lookalike / "inside.txt").read_bytes() == b"e\n"
    assert on_disk(folder) > MIN_BYTES - 8 * KIB, "foreign files must not take from the budget"


def test_files_of_an_earlier_run_count_and_are_rotated_away_first(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    first = PredictionLog(folder, max_bytes=MIN_BYTES, file_bytes=8 * KIB)
    for i in range(300):
        first.write([record(i)])
    first.close()
    earlier = first.files
    contents = {p: p.read_bytes() for p in earlier}
    assert len(earlier) > 2

    second = PredictionLog(folder, max_bytes=MIN_BYTES, file_bytes=8 * KIB)
    assert second.files == earlier
    for i in range(300, 1500):
        second.write([record(i)])
        assert on_disk(folder) <= MIN_BYTES
        new = [p for p in second.files if p not in contents]
        assert all(p > old for p in new for old in earlier), "new names sort after old ones"
        for path, data in contents.items():
            if path.exists():
                assert path.read_bytes() == data, "an earlier file was written to"
                assert all(p.exists() for p in earlier[earlier.index(path) :]), "oldest go first"
    second.close()
    assert not any(p.exists() for p in earlier)


def test_earlier_files_over_a_smaller_budget_are_trimmed_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    first = PredictionLog(folder, max_bytes=4 * MIN_BYTES, file_bytes=8 * KIB)
    for i in range(2000):
        first.write([record(i)])
    first.close()
    assert on_disk(folder) > 2 * MIN_BYTES

    second = PredictionLog(folder, max_bytes=MIN_BYTES)
    assert on_disk(folder) <= MIN_BYTES
    assert second.files == log_files(folder)
    assert read_records(second.files)[-1]["id"] == 1999, "the newest records stay"
    second.close()


def test_concurrent_writes_give_whole_lines_and_the_right_count(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log", max_bytes=64 * MIN_BYTES, file_bytes=16 * KIB)
    threads, calls, per_call = 4, 250, 4
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        start.wait()
        for c in range(calls):
            log.write([{"t": t, "c": c, "k": k, "pad": "z" * (t * 10)} for k in range(per_call)])

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close()
    assert len(log.files) > 5, "expected rotations during the concurrent writes"
    records = read_records(log_files(tmp_path / "log"))
    keys = sorted((r["t"], r["c"], r["k"]) for r in records)
    expected = [(t, c, k) for t in range(threads) for c in range(calls) for k in range(per_call)]
    assert keys == expected
    assert (log.written, log.errors) == (threads * calls * per_call, 0)


def test_a_folder_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_bytes(b"")
    with pytest.raises(ConfigError, match="plain-file/log"):
        PredictionLog(blocker / "log", max_bytes=MIN_BYTES)
    with pytest.raises(ConfigError, match="plain-file"):
        PredictionLog(blocker, max_bytes=MIN_BYTES)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="/ro: expected a writable folder"):
            PredictionLog(folder, max_bytes=MIN_BYTES)
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    ("max_bytes", "file_bytes", "message"),
    [
        (MIN_BYTES - 1, None, "max_bytes.*got 65535"),
        (MIN_BYTES, MIN_BYTES + 1, "file_bytes.*max_bytes=65536.*got 65537"),
        (MIN_BYTES, 0, "file_bytes.*got 0"),
    ],
)
def test_bad_sizes_are_config_errors(
    tmp_path: Path, max_bytes: int, file_bytes: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PredictionLog(tmp_path / "log", max_bytes=max_bytes, file_bytes=file_bytes)


def test_unserializable_and_oversize_records_are_counted_and_skipped(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log", max_bytes=MIN_BYTES)
    log.write([{"id": 1}, {"id": object()}, {"id": "x" * MIN_BYTES}, {"id": 4}])
    assert read_records(log.files) == [{"id": 1}, {"id": 4}]
    assert (log.written, log.errors) == (2, 2)
    log.close()


def test_a_removed_folder_counts_an_error_and_writing_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES)
    log.write([record(0)])
    with caplog.at_level(logging.WARNING, logger="inferno.monitoring.predlog"):
        shutil.rmtree(folder)
        log.write([record(1)])  # must not raise
        assert log.errors == 1
        assert read_records(log_files(folder)) == [record(1)], "the folder is recreated"

        shutil.rmtree(folder)
        log.write([record(2)])
        assert log.errors == 2
        assert read_records(log_files(folder)) == [record(2)]
    assert len(caplog.records) == 1, "one warning per kind of failure"
    assert log.written == 3
    assert log.files == log_files(folder)
    log.close()


def test_a_folder_that_cannot_come_back_is_retried_on_the_next_write(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES)
    log.write([record(0)])
    shutil.rmtree(folder)
    folder.write_bytes(b"in the way")
    log.write([record(1)])
    log.write([record(2)])
    errors = log.errors
    assert errors >= 2
    assert log.written == 1
    assert folder.read_bytes() == b"in the way"

    folder.unlink()
    log.write([record(3)])
    assert log.errors == errors, "no new failure once the folder can be made"
    assert read_records(log_files(folder)) == [record(3)]
    assert log.written == 2
    log.close()


def test_close_is_idempotent_and_later_writes_do_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES)
    log.write([record(0)])
    log.close()
    log.close()
    log.write([record(1)])
    assert read_records(log_files(folder)) == [record(0)]
    assert (log.written, log.errors) == (1, 0)
    assert log.files == log_files(folder)


def test_a_log_that_never_wrote_creates_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = PredictionLog(folder, max_bytes=MIN_BYTES)
    log.write([])
    log.close()
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_the_counter_continues_from_an_earlier_run(tmp_path: Path) -> None:
    # so that a restart within the same second still sorts after the earlier files
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "predictions-20200101T000000Z-000041.jsonl").write_bytes(b'{"id":-1}\n')
    log = PredictionLog(folder, max_bytes=MIN_BYTES)
    log.write([record(0)])
    log.close()
    assert [p.name[-12:] for p in log.files] == ["000041.jsonl", "000042.jsonl"]
