"""The training task: the on-chain contract every node executes the same way.

A :class:`TaskSpec` is carried by the genesis block. It fixes the model
(kind and dimensions, initial parameters through ``init_seed``), the
consensus knobs (server learning rate, aggregation rule and its Byzantine
bound, norm bound, updates per block, rounds and their vote rule, bonds,
rewards, target block time, the useful-update gate) and the policy defaults
a participant's trainer starts from (local learning rate, local steps,
batch size).

Built-in tasks live in ``ml/tasks/<name>.json`` (package data):

``digits``
    8x8 handwritten digits (sklearn's copy), softmax regression (650
    parameters). Each delta is a short local SGD run (``local_steps`` 60 at
    ``lr`` 1.0, ``batch_size`` 32; 60 rather than 20 because the model moves
    only once per round, so each update should carry more: with 3 honest
    participants and a quarter of the blocks poisoned it reaches 94.9 % by
    block 64 against 92.4 %, and holds to 94.4 % at 49 % of the hashrate
    against 93.3 %, ``gradchain sim --attack miner-poison``) and consensus applies the robust aggregate
    of up to 4 of them per block with ``server_lr`` 1.0, so one honest
    participant alone moves the chain exactly as its local run did. The rule
    is the coordinate-wise ``median`` with ``f`` 1 (Yin et al. 2018): one
    Byzantine update among three or four is outvoted coordinate by coordinate.
    Three participants with Dirichlet(alpha=1) label skew reach >= 95 % test
    accuracy in 7-19 blocks (``tests/unit/test_tasks.py`` checks it). With
    stronger skew (alpha 0.5) and only three participants the median's bias
    under heterogeneity stalls near 93-95 %; more participants or milder skew
    lift it. ``norm_bound`` 20.0 is about four times an honest delta's norm
    at initialisation (~5.3, falling to ~1 as the model converges), so honest
    updates always pass and a scaled attacker is clipped out; a looser bound
    would let plain ``mean`` be dragged further, a tighter one would start to
    reject honest first steps. The robust rules do not depend on it: with 30 %
    sign-flip attackers at the bound (``gradchain sim``) median stays at 94.7 %
    while mean falls to 32 %. Rounds of ``round_blocks`` 8 blocks at a
    ``target_block_time_s`` of 2 (a round is 16 s, so a 4-node testnet on two
    cores passes 93 % within its first 6 minutes): each block's median is one vote, and the
    model moves once per round by ``vote_rule`` ``clip+median`` over the
    votes, if the step does not raise the loss on a committed validation set
    of ``gate_examples`` 200 (``gate_scope`` "round", tolerance 0); updates
    are committed one round and revealed the next. ``bond_amount``
    10_000_000 (a fifth of a block reward) buys an identity, mature after
    ``bond_maturity`` 4 blocks, returned ``unbond_delay`` 16 blocks after an
    unbond. docs/DESIGN-NOTES.md ("Rounds, bonds and commit-reveal") has the
    measurements behind each number. Rewards: 50_000_000 base units to the
    miner of each block, 1_000_000 per counted update at a round's end.

``stock``
    A daily price series (ml/datasets.py: synthetic AR(1) returns seeded by
    ``data_seed`` 7, or a user's ``date,close`` CSV); a linear model
    (``softmax`` with a regress head) predicts the next day's return (in
    percent) from the ``window`` 20 most recent daily returns. On the
    synthetic series the best forecast is linear in the last return, with an
    error 1 - phi^2 = 0.75 of the naive "tomorrow = today" forecast; three
    participants reach about 0.80 within ten blocks against the optimum's
    0.79 on the same test days (``ml.evaluate.evaluate`` reports both
    ratios). ``lr`` 0.01 with 20 local steps moves a delta of norm ~0.6 at
    initialisation (~0.07 once converged), so ``norm_bound`` 2.5 is about
    four times an honest first step. Aggregation is ``trimmed_mean`` with
    ``f`` 1, which averages away more of the noise of regression deltas than
    the median does.

Neither gates single updates (``gate_scope`` "update", see :mod:`ml.gate`):
with Dirichlet(1.0) shards a single honest local run raises the global
validation loss more often than not, so any tolerance that passes nearly
every honest update lets a sign-flip of honest size through
(docs/DESIGN-NOTES.md, "The useful-update gate", has the figures). Digits
gates each round's step instead; ``stock`` has no validation set and uses
rounds of 16 with ``lowclip+median``, the rule measured best without a gate.

A task deployed for a participant's own data (``gradchain task init``) also
carries its data schema (``features``: the file's column names before
``label``) and the standardisation the model applies (``input_shift`` and
``input_scale`` per feature, and for a regression ``label_shift`` and
``label_scale``; see :mod:`ml.models`). A regress task with ``window`` 0 is a
regression on such a feature table; ``window`` > 0 marks a price series.

``to_dict``/``from_dict`` give the JSON/msgpack form: only str, int, float
and lists, with ``from_dict`` strict (every key present, no extra key, exact
types) so a genesis block cannot smuggle in an ambiguous task. The
data-schema group is the exception to "every key present": ``to_dict`` leaves
those keys out at their defaults (so tasks without them encode as before)
and ``from_dict`` accepts them absent; so is the target group
(``target_metric`` "accuracy" or "loss" and its ``target_value``), which
closes a deployed task's training once its model reaches the target on the
task's evaluation set.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.aggregation import Pipeline

MODELS = ("softmax", "mlp")
HEADS = ("classify", "regress")
BUILTIN_TASKS: tuple[str, ...] = ("digits", "stock")

U32_MAX = 2**32 - 1
# Rewards travel as u64 base units; keep them representable as signed i64 too.
REWARD_MAX = 2**63 - 1
# A model wider than this is not something a numpy node trains per block.
MAX_DIM = 1 << 16
MAX_HIDDEN_LAYERS = 2
MAX_LOCAL_STEPS = 1_000_000
MAX_BATCH_SIZE = 1 << 20
MAX_UPDATES_PER_BLOCK = 1024
MAX_ROUND_BLOCKS = 256  # a round's votes are kept in the state until its last block
MAX_ROUND_PAYOUTS = 1024  # contributors one round's last block may pay
MAX_BOND_BLOCKS = 1_000_000  # bond maturity and unbonding delay
# Where the useful-update gate applies: each update against the parent model, or
# each round's step against the model it moves (docs/DESIGN-NOTES.md, "Rounds").
GATE_SCOPES = ("update", "round")
MAX_TARGET_BLOCK_TIME_S = 24 * 60 * 60
MAX_WINDOW = 4096
MAX_NAME_LEN = 64
# Every node evaluates the gate set once per update: keep it a few hundred examples.
MAX_GATE_EXAMPLES = 4096
# A relative loss increase of 100 % or more is no gate at all.
MAX_GATE_TOLERANCE = 1.0
SHA256_HEX_LEN = 64
# A participant's feature table ends with this column (ml/datafile.py).
LABEL_COLUMN = "label"
TARGET_METRICS = ("", "accuracy", "loss")  # "": training runs until the bounty is spent
# Standardisation constants are applied in float32 (ml/models.py): they must stay finite there.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38

RuleParam = tuple[str, int | float | str]


def _fail(field: str, allowed: str, value: object) -> ValueError:
    return ValueError(f"task field {field!r} must be {allowed}, got {value!r}")


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(field, f"an int in [{low}, {high}]", value)


def _check_positive_float(field: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, float)
        or not math.isfinite(value)
        or value <= 0.0
    ):
        raise _fail(field, "a finite float > 0", value)


def _check_name(field: str, value: object, extra: str = "") -> None:
    allowed = "_-" + extra
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_NAME_LEN
        or not all(c.isascii() and (c.isalnum() or c in allowed) for c in value)
    ):
        shown = ", ".join(f"'{c}'" for c in allowed)
        raise _fail(field, f"1-{MAX_NAME_LEN} ASCII letters, digits, {shown}", value)


def _check_column_name(value: object) -> None:
    """A CSV column name: printable ASCII without commas or quotes, not ``label``."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_NAME_LEN
        or value != value.strip()
        or value == LABEL_COLUMN
        or not all(" " <= c <= "~" and c not in ',"' for c in value)
    ):
        raise _fail(
            "features",
            f"column names of 1-{MAX_NAME_LEN} printable ASCII characters without commas, "
            f"quotes or outer spaces, other than {LABEL_COLUMN!r}",
            value,
        )


def _check_f32(field: str, value: object, *, positive: bool) -> None:
    """A float the model applies as float32: finite there, and a normal number > 0 if ``positive``."""
    ok = isinstance(value, float) and abs(value) <= FLOAT32_MAX
    if ok and positive:
        ok = isinstance(value, float) and value >= FLOAT32_MIN_NORMAL
    if not ok:
        allowed = "a float32-representable float" + (f" >= {FLOAT32_MIN_NORMAL}" if positive else "")
        raise _fail(field, allowed, value)


@dataclass(frozen=True)
class TaskSpec:
    """One training task, fixed at genesis; see the module docstring for defaults.

    Validation runs in ``__post_init__`` so an invalid task can never exist:
    every error is a ``ValueError`` naming the field and its allowed range.
    """

    name: str
    model: str
    head: str
    input_dim: int
    hidden: tuple[int, ...]
    output_dim: int
    init_seed: int
    lr: float
    local_steps: int
    batch_size: int
    server_lr: float
    rule: str
    f: int
    rule_params: tuple[RuleParam, ...]
    norm_bound: float
    max_updates_per_block: int
    block_reward: int
    contributor_reward: int
    target_block_time_s: int
    data_seed: int
    window: int
    round_blocks: int = 8
    vote_rule: str = "clip+median"
    bond_amount: int = 0
    bond_maturity: int = 0
    unbond_delay: int = 0
    gate_examples: int = 0
    gate_tolerance: float = 0.0
    gate_data_sha256: str = ""
    gate_scope: str = "update"
    # -- Data schema (issue 19): what a participant's file holds and how the
    # model scales it. At their defaults these are left out of ``to_dict``,
    # so a task that does not use them encodes exactly as before.
    features: tuple[str, ...] = ()
    input_shift: tuple[float, ...] = ()
    input_scale: tuple[float, ...] = ()
    label_shift: float = 0.0
    label_scale: float = 1.0
    # -- Target (issue 19, deployed tasks): training closes once the model
    # reaches ``target_value`` of ``target_metric`` ("accuracy": at least,
    # "loss": at most) on the task's evaluation set. Left out of ``to_dict``
    # at their defaults ("": no target), like the schema group.
    target_metric: str = ""
    target_value: float = 0.0

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if self.model not in MODELS:
            raise _fail("model", f"one of {MODELS}", self.model)
        if self.head not in HEADS:
            raise _fail("head", f"one of {HEADS}", self.head)
        _check_int("input_dim", self.input_dim, 1, MAX_DIM)
        self._check_hidden()
        if self.head == "classify":
            _check_int("output_dim", self.output_dim, 2, MAX_DIM)
        elif self.output_dim != 1 or isinstance(self.output_dim, bool):
            raise _fail("output_dim", "1 for a regress head", self.output_dim)
        _check_int("init_seed", self.init_seed, 0, U32_MAX)
        _check_positive_float("lr", self.lr)
        _check_int("local_steps", self.local_steps, 1, MAX_LOCAL_STEPS)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_positive_float("server_lr", self.server_lr)
        _check_name("rule", self.rule, extra="+")  # composed rules: nnm+median, bucket+geomed
        _check_int("max_updates_per_block", self.max_updates_per_block, 1, MAX_UPDATES_PER_BLOCK)
        # Every robust rule we ship needs an honest majority among the updates.
        _check_int("f", self.f, 0, (self.max_updates_per_block - 1) // 2)
        self._check_rule_params()
        self._check_rule()
        _check_positive_float("norm_bound", self.norm_bound)
        _check_int("block_reward", self.block_reward, 0, REWARD_MAX)
        _check_int("contributor_reward", self.contributor_reward, 0, REWARD_MAX)
        _check_int("target_block_time_s", self.target_block_time_s, 1, MAX_TARGET_BLOCK_TIME_S)
        _check_int("data_seed", self.data_seed, 0, U32_MAX)
        self._check_window()
        self._check_rounds()
        self._check_gate()
        self._check_schema()
        self._check_target()

    def _check_target(self) -> None:
        metric, value = self.target_metric, self.target_value
        if metric not in TARGET_METRICS:
            raise _fail("target_metric", f"one of {TARGET_METRICS}", metric)
        if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
            raise _fail("target_value", "a finite float", value)
        if metric == "" and value != 0.0:
            raise _fail("target_value", "0.0 when there is no target_metric", value)
        if metric == "accuracy" and (self.head != "classify" or not 0.0 < value <= 1.0):
            raise _fail("target_value", "a fraction in (0, 1] of a classify task's evaluation rows", value)
        if metric == "loss" and not value > 0.0:
            raise _fail("target_value", "a positive loss", value)

    def _check_rounds(self) -> None:
        from ml.rounds import VOTE_RULES

        _check_int("round_blocks", self.round_blocks, 1, MAX_ROUND_BLOCKS)
        if self.vote_rule not in VOTE_RULES:
            raise _fail("vote_rule", f"one of {sorted(VOTE_RULES)}", self.vote_rule)
        _check_int("bond_amount", self.bond_amount, 0, REWARD_MAX)
        _check_int("bond_maturity", self.bond_maturity, 0, MAX_BOND_BLOCKS)
        _check_int("unbond_delay", self.unbond_delay, 0, MAX_BOND_BLOCKS)
        payouts = self.round_blocks * self.max_updates_per_block
        if payouts > MAX_ROUND_PAYOUTS:
            raise _fail(
                "round_blocks * max_updates_per_block",
                f"at most {MAX_ROUND_PAYOUTS} (contributors a round's last block pays)",
                payouts,
            )

    def _check_gate(self) -> None:
        _check_int("gate_examples", self.gate_examples, 0, MAX_GATE_EXAMPLES)
        tol = self.gate_tolerance
        if (
            isinstance(tol, bool)
            or not isinstance(tol, float)
            or not math.isfinite(tol)
            or not 0.0 <= tol <= MAX_GATE_TOLERANCE
        ):
            raise _fail("gate_tolerance", f"a float in [0.0, {MAX_GATE_TOLERANCE}]", tol)
        if self.gate_scope not in GATE_SCOPES:
            raise _fail("gate_scope", f"one of {GATE_SCOPES}", self.gate_scope)
        digest = self.gate_data_sha256
        if self.gate_examples == 0:
            if digest != "" or tol != 0.0:
                raise _fail(
                    "gate_data_sha256/gate_tolerance", "'' and 0.0 when gate_examples is 0", (digest, tol)
                )
            return
        if not (
            isinstance(digest, str)
            and len(digest) == SHA256_HEX_LEN
            and all(c in "0123456789abcdef" for c in digest)
        ):
            raise _fail("gate_data_sha256", f"{SHA256_HEX_LEN} lowercase hex digits", digest)

    def _check_schema(self) -> None:
        """The data-schema group: column names and the standardisation of inputs and labels."""
        if not isinstance(self.features, tuple):
            raise _fail("features", "a tuple of column names", self.features)
        if self.features:
            if self.window != 0:
                raise _fail("features", "empty for a price-series task (window > 0)", self.features)
            if len(self.features) != self.input_dim:
                raise _fail("features", f"{self.input_dim} column names (input_dim) or none", self.features)
            for name in self.features:
                _check_column_name(name)
            if len(set(self.features)) != len(self.features):
                raise _fail("features", "unique column names", self.features)
        for fld in ("input_shift", "input_scale"):
            values = getattr(self, fld)
            if not isinstance(values, tuple) or len(values) not in (0, self.input_dim):
                raise _fail(fld, f"{self.input_dim} floats (input_dim) or none", values)
            for value in values:
                _check_f32(fld, value, positive=fld == "input_scale")
        if bool(self.input_shift) != bool(self.input_scale):
            raise _fail("input_shift/input_scale", "both given or both empty", (self.input_shift, self.input_scale))
        _check_f32("label_shift", self.label_shift, positive=False)
        _check_f32("label_scale", self.label_scale, positive=True)
        if self.head == "classify" and (self.label_shift, self.label_scale) != (0.0, 1.0):
            raise _fail("label_shift/label_scale", "0.0 and 1.0 for a classify task", (self.label_shift, self.label_scale))

    @property
    def standardised(self) -> bool:
        """True when the model rescales its inputs by ``input_shift`` and ``input_scale``."""
        return bool(self.input_shift)

    def _check_hidden(self) -> None:
        if not isinstance(self.hidden, tuple):
            raise _fail("hidden", "a tuple of ints", self.hidden)
        if self.model == "softmax":
            if self.hidden:
                raise _fail("hidden", "empty for model 'softmax'", self.hidden)
            return
        if not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS:
            raise _fail(
                "hidden", f"1 to {MAX_HIDDEN_LAYERS} layer widths for model 'mlp'", self.hidden
            )
        for width in self.hidden:
            _check_int("hidden", width, 1, MAX_DIM)

    def _check_rule_params(self) -> None:
        allowed = "a tuple of (str, int | float | str) pairs sorted by unique key"
        if not isinstance(self.rule_params, tuple):
            raise _fail("rule_params", allowed, self.rule_params)
        keys: list[str] = []
        for item in self.rule_params:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise _fail("rule_params", allowed, self.rule_params)
            value = item[1]
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _fail("rule_params", allowed, self.rule_params)
            if isinstance(value, float) and not math.isfinite(value):
                raise _fail("rule_params", allowed + " (floats finite)", self.rule_params)
            keys.append(item[0])
        if keys != sorted(set(keys)):
            raise _fail("rule_params", allowed, self.rule_params)

    def _check_rule(self) -> None:
        """The rule is in the registry and every parameter the task sets is one it takes."""
        from ml.aggregation import AggregationError

        try:
            pipeline = self.pipeline
        except AggregationError as exc:
            raise _fail("rule", "a registered rule (ml.aggregation.RULES), optionally after nnm+ / bucket+", self.rule) from exc
        allowed = pipeline.task_params
        unknown = [key for key, _ in self.rule_params if key not in allowed]
        if unknown:
            raise _fail("rule_params", f"parameters {self.rule} takes: {list(allowed) or 'none'}", self.rule_params)

    @cached_property
    def pipeline(self) -> Pipeline:
        """The task's rule parsed once (:func:`ml.aggregation.parse_rule`): its stages and its record."""
        from ml.aggregation import parse_rule

        return parse_rule(self.rule)

    def _check_window(self) -> None:
        if self.head == "classify":
            if self.window != 0 or isinstance(self.window, bool):
                raise _fail("window", "0 for a classify task", self.window)
            return
        if self.window == 0 and not isinstance(self.window, bool):
            return  # a regression on a feature table, not on a price series
        _check_int("window", self.window, 2, MAX_WINDOW)
        if self.input_dim != self.window:
            raise _fail(
                "input_dim", f"equal to window ({self.window}) for a regress task", self.input_dim
            )

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths from input to output, e.g. ``(64, 10)`` or ``(64, 64, 10)``."""
        return (self.input_dim, *self.hidden, self.output_dim)

    @property
    def param_count(self) -> int:
        """Length of the flat parameter vector (weights and biases of every layer)."""
        sizes = self.layer_sizes
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def rule_kwargs(self) -> dict[str, int | float | str]:
        """``rule_params`` as keyword arguments for the aggregation rule."""
        return dict(self.rule_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON/msgpack-ready form: only str, int, float and lists."""
        out: dict[str, Any] = {}
        for fld in fields(self):
            value = getattr(self, fld.name)
            if fld.name in OPTIONAL_FIELDS and value == fld.default:
                continue  # one encoding per task: a field at its default is left out
            if fld.name == "rule_params":
                value = [[k, v] for k, v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[fld.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Strict inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            On a missing or extra key, or a value of the wrong type; the
            message names the key.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a task must be a mapping, got {type(d).__name__}")
        names = [fld.name for fld in fields(cls)]
        missing = [n for n in names if n not in d and n not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"task is missing key(s) {missing}")
        extra = sorted(str(k) for k in d if k not in names)
        if extra:
            raise ValueError(f"task has unknown key(s) {extra}; the known keys are {', '.join(names)}")
        kwargs: dict[str, Any] = {}
        for name in names:
            if name in d:
                kwargs[name] = _convert(name, d[name], _FIELD_KINDS[name])
        return cls(**kwargs)


_FIELD_KINDS: dict[str, str] = {
    "name": "str",
    "model": "str",
    "head": "str",
    "input_dim": "int",
    "hidden": "int_list",
    "output_dim": "int",
    "init_seed": "int",
    "lr": "float",
    "local_steps": "int",
    "batch_size": "int",
    "server_lr": "float",
    "rule": "str",
    "f": "int",
    "rule_params": "pairs",
    "norm_bound": "float",
    "max_updates_per_block": "int",
    "block_reward": "int",
    "contributor_reward": "int",
    "target_block_time_s": "int",
    "data_seed": "int",
    "window": "int",
    "round_blocks": "int",
    "vote_rule": "str",
    "bond_amount": "int",
    "bond_maturity": "int",
    "unbond_delay": "int",
    "gate_examples": "int",
    "gate_tolerance": "float",
    "gate_data_sha256": "str",
    "gate_scope": "str",
    "features": "str_list",
    "input_shift": "float_list",
    "input_scale": "float_list",
    "label_shift": "float",
    "label_scale": "float",
    "target_metric": "str",
    "target_value": "float",
}
# The optional data-schema group: absent from a task's dict when at its default.
SCHEMA_FIELDS = frozenset({"features", "input_shift", "input_scale", "label_shift", "label_scale"})
# Every key ``to_dict`` leaves out at its default: the schema group and the target.
OPTIONAL_FIELDS = SCHEMA_FIELDS | {"target_metric", "target_value"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _convert(name: str, value: object, kind: str) -> object:
    """Type-check one decoded value and give it its dataclass type."""
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int" and _is_int(value):
        return value
    if kind == "float" and isinstance(value, float):
        return value
    if kind == "int_list" and isinstance(value, list | tuple) and all(_is_int(v) for v in value):
        return tuple(value)
    if kind == "float_list" and isinstance(value, list | tuple) and all(isinstance(v, float) for v in value):
        return tuple(value)
    if kind == "str_list" and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if kind == "pairs" and isinstance(value, list | tuple):
        pairs: list[RuleParam] = []
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
                break
            inner = item[1]
            if isinstance(inner, bool) or not isinstance(inner, int | float | str):
                break
            pairs.append((item[0], inner))
        else:
            return tuple(pairs)
    raise ValueError(f"task key {name!r} has the wrong type: expected {kind}, got {value!r}")


def with_overrides(task: TaskSpec, *, rule: str | None = None, f: int | None = None) -> TaskSpec:
    """``task`` with another aggregation rule and/or Byzantine bound (a new chain)."""
    changes: dict[str, Any] = {}
    if rule is not None:
        changes["rule"] = rule
    if f is not None:
        changes["f"] = f
    return replace(task, **changes) if changes else task


def builtin_task(name: str) -> TaskSpec:
    """Load the built-in task ``ml/tasks/<name>.json`` from package data.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`BUILTIN_TASKS`.
    """
    if name not in BUILTIN_TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(BUILTIN_TASKS)}")
    text = resources.files("ml").joinpath("tasks", f"{name}.json").read_text(encoding="utf-8")
    return TaskSpec.from_dict(json.loads(text))
