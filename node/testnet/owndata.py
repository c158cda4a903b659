"""A testnet on the participants' own files: DIR holds eval.csv and node0.csv .. node{N-1}.csv.

``gradchain testnet up --task SPEC.json --data DIR`` checks every file
against the task before a single node starts, so a bad row is reported with
its file, line and column instead of as a node that died in its log; then
node ``i`` trains on ``DIR/node{i}.csv`` and every node scores the model on
``DIR/eval.csv``.
"""

from __future__ import annotations

import pathlib

from ml.datafile import DataFileError, parse_data
from ml.tasks import TaskSpec

EVAL_FILE = "eval.csv"


def node_file(directory: pathlib.Path, index: int) -> pathlib.Path:
    return directory / f"node{index}.csv"


def check_data_dir(spec: TaskSpec, directory: pathlib.Path, nodes: int) -> dict[str, int]:
    """Rows per file, after checking that every file exists and fits ``spec``.

    Raises
    ------
    ValueError
        Naming the missing file, or the file, line and column of the first bad cell.
    """
    if not directory.is_dir():
        raise ValueError(f"--data {directory} is not a directory; it should hold {EVAL_FILE} and "
                         f"node0.csv .. node{nodes - 1}.csv (`gradchain task split` writes them)")
    rows: dict[str, int] = {}
    for path in [directory / EVAL_FILE, *(node_file(directory, i) for i in range(nodes))]:
        if not path.is_file():
            raise ValueError(f"{path} is missing: --data needs {EVAL_FILE} and node0.csv .. "
                             f"node{nodes - 1}.csv for {nodes} nodes")
        try:
            rows[path.name] = parse_data(path.read_bytes(), spec, npz=False).rows
        except DataFileError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return rows
