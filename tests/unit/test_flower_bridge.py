"""The Flower bridge's pure parts: the layer layout, the client contract, loading a client.

The bridge against a live node is tests/node/test_flower.py.
"""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap

import numpy as np
import pytest

from ml.datafile import Table, infer_spec
from ml.models import param_shapes, standardise_inputs, unflatten
from ml.tasks import builtin_task
from node.flower import (
    BridgeError,
    defines,
    fit_config,
    from_layers,
    load_client,
    require_flwr,
    run_config,
    to_layers,
)

flwr = pytest.importorskip("flwr")


@pytest.mark.parametrize("name", ["digits", "stock"])
def test_layers_are_the_tasks_own_blocks_in_flat_order(name: str) -> None:
    task = builtin_task(name)
    flat = np.arange(task.param_count, dtype=np.float32)
    layers = to_layers(task, flat)
    views = unflatten(task, flat)
    assert [a.shape for a in layers] == [shape for _, shape in param_shapes(task)]
    for array, (key, _) in zip(layers, param_shapes(task), strict=True):
        assert np.array_equal(array, views[key])
    layers[0][...] = -1.0  # the client gets copies: its in-place training never touches ours
    assert flat[0] == 0.0
    assert np.array_equal(from_layers(task, to_layers(task, flat)), flat)
    assert from_layers(task, [a.astype(np.float64) for a in to_layers(task, flat)]).dtype == np.float32


def test_a_wrong_layout_names_the_layer_and_the_expected_shapes() -> None:
    task = builtin_task("digits")
    W, b = to_layers(task, np.zeros(task.param_count, np.float32))
    with pytest.raises(BridgeError, match=r"returned 3 arrays; task digits has 2: W0 \[64, 10\], b0 \[10\]"):
        from_layers(task, [W, b, b])
    with pytest.raises(BridgeError, match=r"b0 with shape \[1, 10\]"):
        from_layers(task, [W, b[None, :]])
    with pytest.raises(BridgeError, match="dtype <U1"):
        from_layers(task, [W, np.array(list("abcdefghij"))])
    with pytest.raises(BridgeError, match="returned ndarray"):
        from_layers(task, np.zeros(task.param_count))  # type: ignore[arg-type]


def test_fit_config_carries_the_tasks_training_hints_and_the_base() -> None:
    task = builtin_task("digits")
    config = fit_config(task, 40, 5, 3)
    assert config == {"lr": task.lr, "local_steps": task.local_steps, "batch_size": task.batch_size,
                      "base_height": 40, "round": 5, "server_round": 6, "update": 3, "task": "digits"}
    assert all(isinstance(v, (bool, bytes, float, int, str)) for v in config.values())  # Flower's Scalar
    assert run_config(task) == {"lr": task.lr, "local_steps": task.local_steps, "batch_size": task.batch_size,
                                "task": "digits"}


def test_a_task_that_standardises_its_inputs_hands_the_client_the_standardisation() -> None:
    """A client must train on the rows as the chain's model reads them, (x - shift) / scale."""
    X = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]], dtype=np.float32)
    task = infer_spec(Table(X, np.array([0, 1, 0])), name="mine")
    for config in (fit_config(task, 16, 1), run_config(task)):
        assert all(isinstance(v, (bool, bytes, float, int, str)) for v in config.values())
        shift = np.asarray(json.loads(str(config["input_shift"])), dtype=np.float32)
        scale = np.asarray(json.loads(str(config["input_scale"])), dtype=np.float32)
        assert np.array_equal((X - shift) / scale, standardise_inputs(task, X))  # the same bits


class OnlyFit(flwr.client.NumPyClient):  # type: ignore[misc]
    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        return parameters, 1, {}


class FitAndEvaluate(OnlyFit):
    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        return 0.5, 1, {}


def test_defines_tells_the_clients_own_methods_from_flowers_placeholders() -> None:
    assert defines(OnlyFit(), "fit") and not defines(OnlyFit(), "evaluate")
    assert not defines(OnlyFit(), "get_parameters")
    assert defines(FitAndEvaluate(), "evaluate")


APP = '''
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context


class Client(NumPyClient):
    def __init__(self, partition=None, hints=None):
        self.partition, self.hints = partition, hints

    def fit(self, parameters, config):
        return parameters, 1, {}


instance = Client()


def factory():
    return Client()


def client_fn(context: Context):
    partition = (context.node_config["partition-id"], context.node_config["num-partitions"])
    return Client(partition, dict(context.run_config)).to_client()


def two(a, b):
    return Client()


def no_data(context: Context):
    raise ValueError(f"no data for {context.run_config['task']!r} in this example")


app = ClientApp(client_fn=client_fn)
not_a_client = 42
'''


@pytest.fixture()
def app_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "my_app.py").write_text(textwrap.dedent(APP))
    yield tmp_path
    sys.modules.pop("my_app", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_load_client_takes_an_instance_a_factory_or_a_client_fn(app_dir: pathlib.Path) -> None:
    assert type(load_client("my_app:instance", app_dir=app_dir)).__name__ == "Client"
    assert type(load_client("my_app:factory", app_dir=app_dir)).__name__ == "Client"
    made = load_client("my_app:client_fn", node_config={"partition-id": 2, "num-partitions": 5},
                       run_config={"lr": 0.5}, app_dir=app_dir)
    assert type(made).__name__ == "Client", "the Client from to_client() is unwrapped"
    assert made.partition == (2, 5) and made.hints == {"lr": 0.5}


@pytest.mark.parametrize(("spec", "message"), [
    ("my_app", "must look like pkg.module:factory"),
    ("my_app:app", "is a ClientApp; point --client at the client_fn it wraps"),
    ("my_app:missing", "has no 'missing'"),
    ("my_app:two", "takes 2 arguments"),
    ("my_app:not_a_client", "has no fit"),
    ("no_such_app:client_fn", "cannot import 'no_such_app'.*--app-dir"),
])
def test_load_client_says_what_to_fix(app_dir: pathlib.Path, spec: str, message: str) -> None:
    with pytest.raises(BridgeError, match=message):
        load_client(spec, app_dir=app_dir)


def test_a_client_fn_that_fails_is_named_with_its_error(app_dir: pathlib.Path) -> None:
    with pytest.raises(BridgeError, match="my_app:no_data could not make the client: ValueError: no data for 'x'"):
        load_client("my_app:no_data", run_config={"task": "x"}, app_dir=app_dir)


def test_without_flower_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)  # what `import flwr` sees when it is not installed
    with pytest.raises(BridgeError, match=r"pip install -e '\.\[flower\]'"):
        require_flwr()


def test_a_report_is_json_whatever_scalars_the_client_returned() -> None:
    import json

    from node.flower import Evaluation, RoundReport

    report = RoundReport(3, 24, "00" * 32, Evaluation(0.25, 10, {"accuracy": np.float32(0.5)}), 7,
                         {"loss": np.float64(1.5), "steps": np.int64(20), "tag": b"\x01\x02"}, 2.0, updates=8,
                         txid="ab" * 32)
    data = json.loads(json.dumps(report.to_json()))
    assert data["evaluation"]["metrics"] == {"accuracy": 0.5}
    assert data["fit_metrics"] == {"loss": 1.5, "steps": 20, "tag": "0102"}
    assert "evaluate loss 0.2500 accuracy 0.5000 (10 examples)" in report.describe()
    assert report.describe().startswith("round 3, model 24 ")
    assert f"commitment {'ab' * 8}… of 8 update(s), revealed next round" in report.describe()


def test_a_reveal_report_names_its_round_place_and_block() -> None:
    from node.flower import RevealReport

    report = RevealReport(round=2, index=2, of=8, height=27, txid="9c" * 32)
    assert report.to_json() == {"round": 2, "index": 2, "of": 8, "height": 27, "txid": "9c" * 32, "kind": "reveal"}
    assert report.describe() == "reveal 3/8 of round 2 pooled at block 27 -> tx 9c9c9c9c9c9c9c9c…"
