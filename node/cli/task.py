"""`gradchain task ...`: training tasks for your own data.

``init``     a complete task spec for a CSV/npz (what to deploy, then edit)
``deploy``   put a task on a running chain: its spec, evaluation rows and a bounty (prints its id)
``list``     the tasks of a chain: id, name, status and headline figure
``show``     one task: its spec and the figures of its model
``split``    one table dealt out as an evaluation set and N participants' files
``example``  a bundled table (wine, breast_cancer) or a synthetic price series as a file
``feed``     append one day's close at a time to a node's price file and score its forecasts
``predict``  the chain model's predictions for the rows of a file (scored, if it has labels)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from typing import Any

from node.cli.errors import CliError, api_failure
from node.cli.options import add_json, add_node, add_task, add_unlocked_keystore, print_json

EXAMPLES = ("wine", "breast_cancer", "digits", "stock")
DEFAULT_EXAMPLE_DAYS = 1000  # four years of closes: enough windows for a first run
PRICE_HEADER = ("date", "close")


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = verbs.add_parser("init", help="write a complete task spec for a data file (then edit it)",
                         description="Read FILE (CSV: feature columns, then 'label'; or .npz with X and y), "
                                     "check it, and write a valid task spec for it: feature count and names, "
                                     "head and classes from the label column, the standardisation of every "
                                     "column, and the defaults a first run needs.")
    p.add_argument("--data", required=True, type=pathlib.Path, metavar="FILE", help="your CSV or .npz")
    p.add_argument("--name", default=None, help="task name (default: from the file name)")
    p.add_argument("--head", choices=("classify", "regress"), default=None,
                   help="override the head inferred from the label column")
    p.add_argument("--out", required=True, type=pathlib.Path, metavar="SPEC.json")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_json(p)
    p.set_defaults(handler=cmd_init)

    p = verbs.add_parser("split", help="deal one CSV out as eval.csv and node0.csv .. node{N-1}.csv",
                         description="Split a table the way a federation holds it: a stratified evaluation "
                                     "set and N participants whose label mix is skewed (Dirichlet), for "
                                     "`gradchain testnet up --task SPEC.json --data DIR`.")
    p.add_argument("--data", required=True, type=pathlib.Path, metavar="FILE")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--eval-fraction", type=float, default=0.25, help="share of rows held out for evaluation")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller: more skew)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=pathlib.Path, metavar="DIR")
    add_json(p)
    p.set_defaults(handler=cmd_split)

    p = verbs.add_parser("example", help="write an example data file: wine, breast_cancer, digits or stock",
                         description="wine, breast_cancer and digits (8x8 pixels) ship with scikit-learn (no "
                                     "download); stock is the synthetic AR(1) price series of the built-in "
                                     "task, as date,close.")
    p.add_argument("name", choices=EXAMPLES)
    p.add_argument("--days", type=int, default=DEFAULT_EXAMPLE_DAYS, help="closes to write (stock)")
    p.add_argument("--seed", type=int, default=7, help="series seed (stock)")
    p.add_argument("--out", required=True, type=pathlib.Path, metavar="FILE")
    add_json(p)
    p.set_defaults(handler=cmd_example)

    p = verbs.add_parser("deploy", help="deploy a task on a running chain; prints the new task's id",
                         description="Sign a deploy transaction with your key and send it to the node: the "
                                     "spec, the evaluation rows of EVAL (the public set the task's figures "
                                     "and target are computed on, at most 4096 rows) and a bounty locked "
                                     "from your balance, which pays the task's miners and contributors; what "
                                     "is left returns to you when training closes. Everything is checked "
                                     "before anything is sent.")
    add_node(p)
    add_unlocked_keystore(p, "the deployer's: it signs the deploy and pays the bounty")
    p.add_argument("--spec", required=True, type=pathlib.Path, metavar="SPEC.json", help="gradchain task init writes one")
    p.add_argument("--eval", required=True, type=pathlib.Path, metavar="EVAL.csv", dest="eval_file")
    p.add_argument("--bounty", type=int, default=None, metavar="N",
                   help="base units to lock (default: twenty rounds of the spec's rewards)")
    p.add_argument("--fee", type=int, default=None, metavar="N",
                   help="the deploy's fee (default: the burn the chain asks now, 1 M doubled for each task "
                        "training after the first; it is burned, any more goes to the miner)")
    add_json(p)
    p.set_defaults(handler=cmd_deploy)

    p = verbs.add_parser("list", help="the tasks of a node's chain: id, name, status, headline figure")
    add_node(p)
    add_json(p)
    p.set_defaults(handler=cmd_list)

    p = verbs.add_parser("show", help="one task: its spec, status and the figures of its model")
    add_node(p)
    add_task(p)
    p.add_argument("--height", type=int, default=None, help="figures of the model at this height")
    add_json(p)
    p.set_defaults(handler=cmd_show)

    p = verbs.add_parser("predict", help="predictions of a task's model for the rows of a CSV/npz",
                         description="Send FILE's rows to the node and print one prediction per row. FILE "
                                     "has the task's feature columns (a header row first), optionally "
                                     "followed by 'label', which then scores the predictions; a price-"
                                     "series task takes a date,close file and forecasts the next day.")
    add_node(p)
    add_task(p)
    p.add_argument("--inputs", required=True, type=pathlib.Path, metavar="FILE")
    p.add_argument("--height", type=int, default=None, help="the model at this height (default: the tip)")
    add_json(p)
    p.set_defaults(handler=cmd_predict)

    p = verbs.add_parser("feed", help="append one day's close at a time to a node's price file, "
                                      "scoring the model's forecast of each day")
    add_node(p)
    add_task(p)
    p.add_argument("--data", required=True, type=pathlib.Path, metavar="FILE", help="its date,close file")
    p.add_argument("--days", type=int, default=None, help="stop after this many days (default: Ctrl-C)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between days (about a block)")
    p.add_argument("--from", dest="source", type=pathlib.Path, default=None, metavar="CSV",
                   help="replay the later days of this date,close file (default: continue the AR(1) series)")
    p.add_argument("--seed", type=int, default=0, help="seed of the continued series")
    add_json(p)  # one JSON object per day
    p.set_defaults(handler=cmd_feed)


# -- init --------------------------------------------------------------------------------------


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_price_file(blob: bytes) -> bool:
    first = blob.decode("utf-8-sig", errors="replace").lstrip().split("\n", 1)[0]
    return tuple(c.strip().lower() for c in first.split(",")) == PRICE_HEADER


def task_name(path: pathlib.Path) -> str:
    """A valid task name from a file name: ``my data (v2).csv`` -> ``my_data_v2``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:64]
    return name or "task"


def cmd_init(args: argparse.Namespace) -> int:
    import dataclasses

    from ml.datafile import DataFileError, infer_spec, parse_data
    from ml.tasks import builtin_task

    if args.out.exists() and not args.force:
        raise CliError(f"{args.out} already exists; add --force to overwrite it")
    blob = _read(args.data)
    name = args.name or task_name(args.data)
    try:
        if _is_price_file(blob):  # a date,close series: the stock task's model, on this series
            spec = dataclasses.replace(builtin_task("stock"), name=name)
            rows = parse_data(blob, spec, npz=False).rows
        else:
            table = parse_data(blob, npz=args.data.suffix.lower() == ".npz")
            spec = infer_spec(table, name=name, head=args.head)
            rows = table.rows
    except DataFileError as exc:
        raise CliError(f"{args.data}: {exc}") from None
    except ValueError as exc:  # an invalid --name
        raise CliError(str(exc)) from None
    args.out.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    summary = _describe(spec, rows)
    if args.json:
        print(json.dumps({"spec": str(args.out), **summary}))
    else:
        print(f"wrote {args.out}: task {spec.name!r}, {summary['what']}, from {rows} rows of {args.data}")
        print("edit it to change the defaults (docs/tasks.md says what each field does); try it on a local "
              f"testnet with `gradchain task split` and `make testnet TASK={args.out} DATA=DIR`", file=sys.stderr)
    return 0


def _describe(spec: Any, rows: int) -> dict[str, Any]:
    if spec.window:
        what = f"next-day return from {spec.window} daily returns"
    elif spec.head == "classify":
        what = f"{spec.output_dim} classes from {spec.input_dim} features (standardised)"
    else:
        what = f"a number from {spec.input_dim} features (standardised, label too)"
    return {"name": spec.name, "head": spec.head, "input_dim": spec.input_dim,
            "output_dim": spec.output_dim, "rows": rows, "what": what}


# -- split and example -------------------------------------------------------------------------


def cmd_split(args: argparse.Namespace) -> int:
    from ml.datafile import DataFileError, parse_data
    from ml.tabular import split_table, table_csv

    if not 1 <= args.nodes <= 64:
        raise CliError("--nodes must be 1..64")
    blob = _read(args.data)
    try:
        table = parse_data(blob, npz=args.data.suffix.lower() == ".npz")
        evaluation, parts = split_table(table, args.nodes, eval_fraction=args.eval_fraction,
                                        alpha=args.alpha, seed=args.seed)
    except DataFileError as exc:
        raise CliError(f"{args.data}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"cannot split {args.data}: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.csv").write_text(table_csv(evaluation))
    for index, part in enumerate(parts):
        (args.out / f"node{index}.csv").write_text(table_csv(part))
    if args.json:
        print_json({"out": str(args.out), "eval_rows": evaluation.rows, "node_rows": [p.rows for p in parts]})
        return 0
    sizes = ", ".join(f"node{i} {p.rows}" for i, p in enumerate(parts))
    print(f"wrote {args.out}/eval.csv ({evaluation.rows} rows) and {sizes}")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from node.cli.files import write_file

    if args.name == "stock":
        import datetime

        from ml.datasets import synthetic_prices
        from node.stockfeed import next_trading_day

        if args.days < 2:
            raise CliError("--days must be at least 2")
        day = datetime.date(2020, 1, 1)
        lines = ["date,close"]
        for close in synthetic_prices(args.seed, args.days):
            day = next_trading_day(day)
            lines.append(f"{day.isoformat()},{close:.6f}")
        write_file(args.out, lambda path: path.write_text("\n".join(lines) + "\n"))
        if args.json:
            print_json({"path": str(args.out), "rows": args.days})
        else:
            print(f"wrote {args.out}: {args.days} daily closes (AR(1) returns, seed {args.seed})")
        return 0
    from ml.tabular import sklearn_table, table_csv

    table = sklearn_table(args.name)
    write_file(args.out, lambda path: path.write_text(table_csv(table)))
    if args.json:
        print_json({"path": str(args.out), "rows": table.rows, "features": len(table.features)})
    else:
        print(f"wrote {args.out}: {table.rows} rows, {len(table.features)} features and 'label'")
    return 0


# -- list, show, predict -----------------------------------------------------------------------

PREDICT_BATCH_ROWS = 10_000  # the API's per-request cap (node/api/predict_input.py MAX_PREDICT_ROWS)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Check the spec, the evaluation rows and the funds here, then sign and send the deploy."""
    from node import keystore_file
    from node.client import ApiError, NodeClient
    from node.taskfile import TaskFileError, default_bounty, read_evalset, read_spec
    from wallet import KeystoreError, address_of

    try:
        spec = read_spec(args.spec)
        evalset = read_evalset(spec, args.eval_file)
    except TaskFileError as exc:
        raise CliError(str(exc)) from None
    bounty = default_bounty(spec) if args.bounty is None else args.bounty
    if bounty <= 0 or (args.fee is not None and args.fee < 0):
        raise CliError("--bounty must be positive (it pays the task's miners and contributors) and --fee not negative")
    try:
        keypair = keystore_file.read_keystore(
            args.keystore, keystore_file.read_password(confirm=False, file=args.password_file)
        )
    except (keystore_file.KeystoreFileError, KeystoreError) as exc:
        raise CliError(str(exc)) from None
    client = NodeClient(args.node)
    try:
        burn = client.deploy_fee()
        fee = burn if args.fee is None else args.fee
        if fee < burn:
            raise CliError(f"a deploy burns {burn} while the chain trains its tasks now (1 M, doubled for each "
                           f"task training after the first); --fee {fee} does not cover it")
        account = client.account(address_of(keypair.public))
        if int(account["balance"]) < bounty + fee:
            raise CliError(
                f"{account['address']} holds {account['balance']} base units; the deploy locks {bounty} "
                f"(--bounty) plus a fee of {fee} (burned). Mine or receive coins first, or deploy a smaller bounty."
            )
        task_id = client.deploy(keypair, spec, evalset, bounty, fee)
    except ApiError as exc:
        raise CliError(f"the node refused the deploy: {exc.message}") from None
    if args.json:
        print_json({"id": task_id, "name": spec.name, "bounty": bounty, "fee": fee})
        return 0
    print(task_id)
    print(f"task {spec.name!r} deployed with a bounty of {bounty} and a fee of {fee}; it trains once a block includes it "
          f"(`gradchain task show --node {args.node} --task {task_id[:12]}`)", file=sys.stderr)
    return 0


def resolve_task(client: Any, given: str | None) -> dict[str, Any]:
    """The task ``given`` names (its id, a prefix of one, or its name), or the chain's first task.

    Names and ids are chosen by whoever deploys a task, so anyone can deploy one named like
    another task, or like a prefix of another's id: a reference that fits more than one task
    (by name, by prefix, or one of each) is refused and the candidates are listed, never
    guessed. A whole id always names its own task.
    """
    from node.client import ApiError
    from node.taskfile import MIN_ID_PREFIX

    try:
        tasks = client.tasks()
    except ApiError as exc:
        raise CliError(exc.message) from None
    if given is None:
        return dict(tasks[0])
    by_id = {str(t["id"]): t for t in tasks}
    if given.lower() in by_id:
        return dict(by_id[given.lower()])
    prefix = given.lower()
    fits = [t for t in tasks if t["name"] == given
            or (len(prefix) >= MIN_ID_PREFIX and str(t["id"]).startswith(prefix))]
    if len(fits) == 1:
        return dict(fits[0])
    if fits:
        listed = ", ".join(f"{t['name']} {str(t['id'])[:16]}…" for t in fits)
        raise CliError(f"--task {given} fits {len(fits)} tasks ({listed}): anyone can deploy a task with a "
                       "name or id prefix like another's, so give more of the id (`gradchain task list`)")
    raise CliError(f"--task {given} is not a task of this chain; its tasks: {', '.join(by_id)} "
                   "(`gradchain task list` shows their names)")


def task_id_of(client: Any, given: str | None) -> str | None:
    """The id of the task ``--task`` names, or None without one (the chain's first: the routes' default)."""
    return None if given is None else str(resolve_task(client, given)["id"])


def task_spec_of(client: Any, given: str | None) -> tuple[str | None, Any]:
    """The id (None: the chain's first) and the spec of the task ``--task`` names; a refusal as a CliError."""
    from node.client import ApiError

    task_id = task_id_of(client, given)
    try:
        return task_id, client.task_spec(task_id)
    except ApiError as exc:
        raise api_failure(exc, "the request for its task") from None


def _spec_of(client: Any, task_id: str) -> Any:
    from ml.tasks import TaskSpec
    from node.client import ApiError

    try:
        return TaskSpec.from_dict(client.task(task_id)["spec"])
    except ApiError as exc:
        raise CliError(exc.message) from None


def cmd_list(args: argparse.Namespace) -> int:
    from node.client import ApiError, NodeClient

    try:
        tasks = NodeClient(args.node).tasks()
    except ApiError as exc:
        raise CliError(exc.message) from None
    if args.json:
        print(json.dumps(tasks))
        return 0
    for t in tasks:
        bounty = f"  bounty left {t['bounty_left']}" if t.get("deployed") else ""
        print(f"{t['id']}  {t['name']:<20} {t['status']:<9} {t['head']:<8} {t['label']}{bounty}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    task_id = resolve_task(client, args.task)["id"]
    try:
        task = client.task(task_id, args.height)
    except ApiError as exc:
        raise CliError(exc.message) from None
    if args.json:
        print(json.dumps(task))
        return 0
    print(f"task     {task['id']}\nname     {task['name']} ({task['status']})")
    print(f"model    {task['model']} {task['head']}, {task['input_dim']} inputs -> {task['output_dim']}, "
          f"rule {task['rule']} f={task['f']}")
    figures = ", ".join(f"{k} {v:.4g}" for k, v in task["metrics"].items()) or "none (no evaluation set)"
    print(f"height   {task['height']} (model version {task['version']}): {figures}")
    if task.get("deployed"):
        target = f", target {task['target_metric']} {task['target_value']:g}" if task["target_metric"] else ""
        print(f"contract deployed at height {task['deployed_at']} by {task['deployer']}: bounty left "
              f"{task['bounty_left']}, {task['eval_rows']} evaluation rows{target}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.datafile import DataFileError, parse_inputs
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    task_id = resolve_task(client, args.task)["id"]
    spec = _spec_of(client, task_id)
    try:
        X, labels = parse_inputs(_read(args.inputs), spec, npz=args.inputs.suffix.lower() == ".npz")
    except DataFileError as exc:
        raise CliError(f"{args.inputs}: {exc}") from None
    predictions: list[Any] = []
    height = args.height
    try:
        for start in range(0, X.shape[0], PREDICT_BATCH_ROWS):
            batch, height = client.task_predict(task_id, X[start : start + PREDICT_BATCH_ROWS], height)
            predictions += batch  # every batch from the model at the first batch's height
    except ApiError as exc:
        raise CliError(f"the node refused the prediction: {exc.message}") from None
    score = _score(spec, np.asarray(predictions), labels)
    if args.json:
        print(json.dumps({"task": task_id, "predictions": predictions, "height": height, **score}))
        return 0
    for value in predictions:
        print(value)
    scored = ", ".join(f"{k} {v:.4g}" for k, v in score.items())
    print(f"{len(predictions)} predictions by the model of task {spec.name!r} at height {height}"
          + (f"; against the file's labels: {scored}" if scored else ""), file=sys.stderr)
    return 0


def _score(spec: Any, predicted: Any, labels: Any) -> dict[str, float]:
    """Accuracy (classify) or MSE (regress) of the predictions against the file's labels, if any."""
    import numpy as np

    if labels is None:
        return {}
    if spec.head == "classify":
        return {"accuracy": float(np.mean(predicted == labels))}
    return {"mse": float(np.mean((predicted.astype(np.float64) - labels.astype(np.float64)) ** 2))}


# -- feed --------------------------------------------------------------------------------------


def cmd_feed(args: argparse.Namespace) -> int:
    import time

    from ml.datasets import latest_returns
    from node.client import ApiError, NodeClient
    from node.stockfeed import Day, FeedScore, ar1_days, read_series, replay_days, run_feed

    client = NodeClient(args.node)
    task_id = resolve_task(client, args.task)["id"]
    spec = _spec_of(client, task_id)
    window = spec.window
    if window == 0:
        raise CliError(f"task {spec.name!r} is not a price series; "
                       "start the node with --task stock --train --data FILE")
    try:
        dates, closes = read_series(args.data)
        latest_returns(closes, window)
    except (OSError, ValueError) as exc:
        raise CliError(f"{args.data}: {exc}") from None
    last_return = float((closes[-1] / closes[-2] - 1.0) * 100.0)
    days = (replay_days(args.source, dates[-1], float(closes[-1])) if args.source is not None
            else ar1_days(dates[-1], float(closes[-1]), last_return, args.seed))

    def forecast(row: list[float]) -> float:
        try:
            return float(client.task_predict(task_id, [row])[0][0])
        except ApiError as exc:
            raise CliError(f"the node refused the forecast: {exc.message}") from None

    def report(day: Day, predicted: float, score: FeedScore) -> None:
        best = score.optimum_ratio
        if args.json:
            print(json.dumps({"date": day.date.isoformat(), "close": day.close, "forecast": predicted,
                              "actual": day.ret, "days": score.days, "mse_ratio": score.ratio,
                              "optimum_ratio": best}), flush=True)
            return
        floor = f" (best possible {best:.3f})" if best is not None else ""
        print(f"{day.date}  close {day.close:10.4f}  forecast {predicted:+6.2f} %  actual {day.ret:+6.2f} %"
              f"  | {score.days:4d} days: model/naive MSE {score.ratio:.3f}{floor}", flush=True)

    try:
        score = run_feed(args.data, days, forecast, window, count=args.days,
                         wait=lambda: time.sleep(args.interval), report=report)
    except (OSError, ValueError) as exc:
        raise CliError(f"{args.data}: {exc}") from None
    if not args.json:
        print(f"{score.days} days fed; the model's forecasts scored {score.ratio:.3f} of the naive error",
              file=sys.stderr)
    return 0
