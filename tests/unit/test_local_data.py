"""node/datafile.py: a node's own data file, sealed in the datadir and followed as rows are appended."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib
import stat

import numpy as np
import pytest

from ml.datafile import Table, infer_spec, parse_csv
from ml.shards import decrypt_shard, derive_shard_key
from ml.tasks import TaskSpec, builtin_task
from node.datafile import KEY_SALT, SEALED_FILE, DataSourceError, LocalData

SECRET = b"s" * 32
HEADER = "a,b,label\n"


def task() -> TaskSpec:
    return infer_spec(parse_csv(HEADER + "1,2,0\n3,4,1\n5,6,2\n"), name="t")


def write(path: pathlib.Path, text: str) -> None:
    path.write_text(text)
    # Writes within one mtime tick are told apart by size; make sure the stamp moves anyway.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def append(path: pathlib.Path, text: str) -> None:
    write(path, path.read_text() + text)


def sealed_rows(datadir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    return decrypt_shard((datadir / SEALED_FILE).read_bytes(), derive_shard_key(SECRET, salt=KEY_SALT))


@pytest.fixture
def csv(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "mine.csv"
    write(path, HEADER + "1,2,0\n3,4,1\n")
    return path


def open_data(csv: pathlib.Path, tmp_path: pathlib.Path, spec: TaskSpec | None = None) -> LocalData:
    datadir = tmp_path / "node"
    datadir.mkdir(exist_ok=True)
    return LocalData.open(csv, datadir, SECRET, spec or task())


def test_the_file_is_checked_and_sealed_encrypted_in_the_datadir(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = open_data(csv, tmp_path)
    assert data.rows == 2 and data.X.dtype == np.float32 and data.y.tolist() == [0, 1]
    sealed = tmp_path / "node" / SEALED_FILE
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert b"3,4,1" not in sealed.read_bytes()
    X, y = sealed_rows(tmp_path / "node")
    np.testing.assert_array_equal(X, data.X)
    assert y.tolist() == [0, 1]


def test_a_still_file_costs_one_stat(csv: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = open_data(csv, tmp_path)
    reads: list[pathlib.Path] = []
    real = pathlib.Path.read_bytes

    def counting(self: pathlib.Path) -> bytes:
        reads.append(self)
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting)
    assert [data.refresh() for _ in range(5)] == [0] * 5
    assert reads == []


def test_appended_rows_are_picked_up_and_resealed(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = open_data(csv, tmp_path)
    append(csv, "5,6,2\n7,8,0\n")
    assert data.refresh() == 2
    assert data.y.tolist() == [0, 1, 2, 0]
    np.testing.assert_array_equal(data.X[-1], [7, 8])
    assert sealed_rows(tmp_path / "node")[1].tolist() == [0, 1, 2, 0]
    assert data.refresh() == 0


def test_only_the_new_bytes_are_parsed(csv: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = open_data(csv, tmp_path)
    seen: list[int] = []
    import node.datafile as module

    real = module.parse_rows

    def spy(lines: list[str], *args: object, **kwargs: object) -> object:
        seen.append(len([line for line in lines if line.strip()]))
        return real(lines, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "parse_rows", spy)
    append(csv, "5,6,2\n")
    assert data.refresh() == 1
    assert max(seen) == 1  # the two old rows were not parsed again


def test_a_half_written_last_line_is_used_provisionally_then_read_again(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = open_data(csv, tmp_path)
    append(csv, "5,6,")  # the writer is mid-line: not a valid row yet
    assert data.refresh() == 0 and data.last_error is None
    append(csv, "2")  # complete but unterminated: used, not committed
    assert data.refresh() == 1 and data.y.tolist() == [0, 1, 2]
    append(csv, "\n9,9,1\n")
    assert data.refresh() == 1 and data.y.tolist() == [0, 1, 2, 1]  # "5,6,2" counted once


def test_a_bad_appended_row_keeps_the_good_ones_and_waits_for_a_fix(
    csv: pathlib.Path, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = open_data(csv, tmp_path)
    append(csv, "5,6,2\n7,x,0\n8,8,1\n")
    with caplog.at_level(logging.ERROR, logger="gradchain.data"):
        assert data.refresh() == 1
    assert data.y.tolist() == [0, 1, 2]
    assert data.last_error is not None and "line 5, column 2 ('b')" in data.last_error
    assert "line 5, column 2" in caplog.text
    assert sealed_rows(tmp_path / "node")[1].tolist() == [0, 1, 2]
    write(csv, csv.read_text().replace("7,x,0", "7,7,0"))  # fixed in place
    assert data.refresh() == 2
    assert data.y.tolist() == [0, 1, 2, 0, 1] and data.last_error is None


def test_a_rewritten_file_is_read_again_whole(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = open_data(csv, tmp_path)
    write(csv, HEADER + "9,9,2\n")
    assert data.refresh() == -1
    assert data.y.tolist() == [2]
    assert sealed_rows(tmp_path / "node")[1].tolist() == [2]


def test_a_removed_file_leaves_the_sealed_copy(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    open_data(csv, tmp_path)
    csv.unlink()
    again = open_data(csv, tmp_path)  # a restart after the user deleted the plaintext
    assert again.y.tolist() == [0, 1]
    assert again.refresh() == 0
    with pytest.raises(DataSourceError, match="Wrong key|wrong key"):
        LocalData.open(csv, tmp_path / "node", b"t" * 32, task())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEADER + "1,2,0\n3,4\n", "mine.csv: line 3: 2 values, expected 3.*label missing"),
        (HEADER + "1,2,0\n1,abc,1\n", r"mine.csv: line 3, column 2 \('b'\)"),
        ("a,c,label\n1,2,0\n", "'c' where task 't' has 'b'"),
        (HEADER + "1,2,7\n", "class 7"),
        (HEADER, "no complete example"),
    ],
)
def test_a_bad_file_stops_the_start_with_its_line_and_column(tmp_path: pathlib.Path, text: str, words: str) -> None:
    path = tmp_path / "mine.csv"
    write(path, text)
    with pytest.raises(DataSourceError, match=words):
        open_data(path, tmp_path)
    assert not (tmp_path / "node" / SEALED_FILE).exists()


def test_a_missing_file_without_a_sealed_copy_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        open_data(tmp_path / "nope.csv", tmp_path)


def test_an_npz_is_read_again_whole_when_it_changes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mine.npz"

    def save(n: int) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, X=np.ones((n, 2)), y=np.arange(n) % 3)
        path.write_bytes(buffer.getvalue())
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    save(2)
    data = open_data(path, tmp_path)
    assert data.rows == 2
    save(5)
    assert data.refresh() == 3 and data.y.tolist() == [0, 1, 2, 0, 1]


def test_a_price_series_gains_one_example_per_appended_close(tmp_path: pathlib.Path) -> None:
    spec = dataclasses.replace(builtin_task("stock"), window=3, input_dim=3)
    path = tmp_path / "prices.csv"
    closes = [100, 101, 99, 102, 103]
    write(path, "date,close\n" + "".join(f"2024-01-{i + 1:02d},{c}\n" for i, c in enumerate(closes)))
    data = open_data(path, tmp_path, spec)
    assert data.rows == 1  # 4 returns, window 3: one (window, next return) example
    append(path, "2024-01-06,104\n")
    assert data.refresh() == 1
    assert data.y[-1] == pytest.approx((104 / 103 - 1) * 100, rel=1e-5)


def test_the_rows_are_a_table_the_trainer_can_use(csv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = open_data(csv, tmp_path)
    Table(data.X, data.y)  # the shapes agree
    assert data.X.shape == (2, 2)
