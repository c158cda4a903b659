"""flower_digits: a Flower / numpy app.

An ordinary Flower client: nothing in it knows about gradchain. Run it under
Flower (``flwr run``) or join a gradchain task with it unchanged::

    gradchain flower --node URL --keystore me.json \
        --app-dir examples/flower --client flower_digits.client_app:client_fn

The run config's ``task`` names the table it trains on (digits when absent;
also wine and breast_cancer, see task.py).
"""

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context

from flower_digits.task import get_initial_params, load_data, standardise, test, train

DEFAULT_LR = 1.0
DEFAULT_LOCAL_STEPS = 20
DEFAULT_BATCH_SIZE = 32


class FlowerClient(NumPyClient):
    def __init__(self, X_train, y_train, X_test, y_test, seed=0, n_classes=None):
        self.X_train, self.y_train = X_train, y_train
        self.X_test, self.y_test = X_test, y_test
        classes = n_classes or int(max(y_train.max(), y_test.max())) + 1
        self.params = get_initial_params(X_train.shape[1], classes)
        self.rng = np.random.default_rng(seed)

    def get_parameters(self, config):
        return self.params

    def fit(self, parameters, config):
        lr = float(config.get("lr", DEFAULT_LR))
        steps = int(config.get("local_steps", DEFAULT_LOCAL_STEPS))
        batch_size = int(config.get("batch_size", DEFAULT_BATCH_SIZE))
        X = standardise(self.X_train, config)
        self.params, train_loss = train(parameters, X, self.y_train, lr, steps, batch_size, self.rng)
        return self.params, len(self.y_train), {"train_loss": train_loss}

    def evaluate(self, parameters, config):
        loss, accuracy = test(parameters, standardise(self.X_test, config), self.y_test)
        return loss, len(self.y_test), {"accuracy": accuracy}


def client_fn(context: Context):
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    table = str(context.run_config.get("task", "digits"))
    X_train, y_train, X_test, y_test = load_data(partition_id, num_partitions, table)
    return FlowerClient(X_train, y_train, X_test, y_test, seed=partition_id).to_client()


app = ClientApp(client_fn=client_fn)
