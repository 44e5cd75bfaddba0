"""Run controls the papers use beyond a fixed number of epochs, each with its state in the trainer's checkpoint,
so a resumed run stops (or averages) exactly where an uninterrupted one would:

- ``trainer.stop_at``: a target, ``METRIC<VALUE`` or ``METRIC>VALUE`` (also <=, >=), that ends the run with
  status ``reached`` (the hypergradient paper's loss thresholds, time-to-target tables). A metrics.csv column
  (``train_*``, ``val_*``, ``test_*``) is checked at each epoch end, epoch 0 included; any other name is a
  steps.csv column (``loss``, ``lr``, an optimizer's extras) checked at every logged step.
- ``trainer.patience``: early stopping, as the AggMo reference runner: the run ends (status ``finished``,
  ``stop_reason: patience``) once more than N epochs have passed without a better validation metric than the
  one best.pth holds.
- ``trainer.nt_asgd``: AWD-LSTM's non-monotonically triggered averaging (Merity et al. 2018), below.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch

from optbench.errors import ConfigError

OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
EPOCH_PREFIXES = ("train_", "val_", "test_")  # metrics.csv columns; anything else is a steps.csv column
_EXAMPLE = "e.g. 'trainer.stop_at=\"loss<0.3\"' or 'trainer.stop_at=\"val_acc>0.97\"' on the command line"


@dataclass(frozen=True)
class Target:
    column: str
    op: str
    value: float

    @property
    def per_epoch(self) -> bool:
        return self.column.startswith(EPOCH_PREFIXES)

    def hit(self, row: Mapping) -> bool:
        value = row.get(self.column)
        return value is not None and OPERATORS[self.op](float(value), self.value)

    def __str__(self) -> str:
        value = repr(self.value)
        return f"{self.column}{self.op}{value[:-2] if value.endswith('.0') else value}"


_SHAPE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([^\sA-Za-z0-9_.+\-]*)\s*(.*?)\s*$")


def parse_target(text: object, key: str = "trainer.stop_at") -> Target:
    """'loss<0.3' -> Target('loss', '<', 0.3); a ConfigError naming what is wrong and the fix otherwise."""
    match = _SHAPE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{key}={text!r} is not a target METRIC<VALUE or METRIC>VALUE; {_EXAMPLE}")
    column, op, value = match.groups()
    if not op:
        raise ConfigError(f"{key}={text!r} has no comparison; write METRIC<VALUE or METRIC>VALUE ({_EXAMPLE})")
    if op not in OPERATORS:
        raise ConfigError(f"{key}={text!r}: unknown operator {op!r}; use <, <=, > or >= ({_EXAMPLE})")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{key}={text!r}: the value {value!r} is not a finite number; {_EXAMPLE}")
    return Target(column, op, number)


def check_epoch_column(key: str, column: str, metric_names: Sequence[str]) -> None:
    """A metrics.csv column the task writes: train_/val_/test_ + loss or one of its metrics."""
    split, _, name = column.partition("_")
    names = ("loss",) + tuple(metric_names)
    if not column.startswith(EPOCH_PREFIXES) or name not in names:
        valid = ", ".join(f"{s}_{n}" for s in ("train", "val", "test") for n in names)
        raise ConfigError(f"{key}: {column!r} is not a metrics.csv column of this task; valid: {valid}")


class Averaging:
    """NT-ASGD: after each training epoch the validation loss joins a history; once it is worse than the best
    of the history without its last ``nonmono`` entries, averaging starts, and validation, test and best.pth
    use the average. With plain SGD this is AWD-LSTM's switch to torch.optim.ASGD(t0=0, lambd=0): SGD plus a
    running mean ``ax`` of the iterates, which (its mu being 1 for two steps) starts at the iterate after the
    second step; the mean here starts there too (torch.optim.swa_utils.AveragedModel, equal weights). With
    other optimizers their iterates are averaged (AWD-LSTM's code switches only from SGD). Parameters are
    averaged, buffers are not."""

    def __init__(self, nonmono: int, model: torch.nn.Module) -> None:
        self.nonmono, self.model = nonmono, model
        self.history: list[float] = []
        self.since: dict | None = None  # the epoch and step after which averaging started
        self.average: torch.optim.swa_utils.AveragedModel | None = None
        self.skip = 0  # steps after the switch that ASGD's mean leaves out (the first one)

    def observe(self, val_loss: float, epoch: int, step: int) -> None:
        """A training epoch's validation loss (AWD-LSTM's trigger, checked before the loss joins the history)."""
        if self.average is not None:
            return
        earlier = self.history[:-self.nonmono]
        if len(self.history) > self.nonmono and val_loss > min(earlier):
            self.since = {"epoch": epoch, "step": step}
            self.average, self.skip = torch.optim.swa_utils.AveragedModel(self.model), 1
        self.history.append(val_loss)

    def after_step(self) -> None:
        if self.average is not None and self.skip:
            self.skip -= 1
        elif self.average is not None:
            self.average.update_parameters(self.model)

    @contextlib.contextmanager
    def weights(self) -> Iterator[None]:
        """The averaged weights in the model for the block (evaluation, best.pth), the trained ones after."""
        if self.average is None or int(self.average.n_averaged) == 0:
            yield
            return
        params = list(self.model.parameters())
        trained = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, averaged in zip(params, self.average.parameters()):
                param.copy_(averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, kept in zip(params, trained):
                    param.copy_(kept)

    def state_dict(self) -> dict:
        return {"history": list(self.history), "since": self.since, "skip": self.skip,
                "average": None if self.average is None else self.average.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.history, self.since = [float(v) for v in state["history"]], state["since"]
        self.average, self.skip = None, int(state["skip"])
        if state["average"] is not None:
            self.average = torch.optim.swa_utils.AveragedModel(self.model)
            self.average.load_state_dict(state["average"])


class RunControls:
    """stop_at, patience and NT-ASGD for one run. ``stopped`` says why and where the run ended early (None while
    it goes on); it is in the checkpoint, so a run killed after deciding to stop does not train on."""

    def __init__(self, trainer: Mapping, metric_names: Sequence[str], step_columns: Sequence[str],
                 model: torch.nn.Module) -> None:
        self.target = parse_target(trainer["stop_at"]) if trainer.get("stop_at") is not None else None
        if self.target is not None and self.target.per_epoch:
            check_epoch_column("trainer.stop_at", self.target.column, metric_names)
        elif self.target is not None and self.target.column not in step_columns:
            raise ConfigError(f"trainer.stop_at: {self.target.column!r} is not a steps.csv column of this run "
                              f"(those are {', '.join(step_columns)}); or name a metrics.csv column "
                              "(train_*, val_*, test_*), checked at epoch ends")
        self.patience = trainer.get("patience")
        nonmono = trainer.get("nt_asgd")
        self.averaging = Averaging(int(nonmono), model) if nonmono is not None else None
        self.stopped: dict | None = None

    @property
    def status(self) -> str:
        """How a run that trained to its end (or stopped early) is recorded."""
        return "reached" if (self.stopped or {}).get("stop_reason") == "stop_at" else "finished"

    def step_row(self, row: Mapping) -> bool:
        """A steps.csv row; True when it reaches the target (the epoch ends here)."""
        if self.target is None or self.target.per_epoch or not self.target.hit(row):
            return False
        self._reached(row)
        return True

    def epoch_row(self, row: Mapping, best_epoch: int) -> None:
        """A metrics.csv row (epoch 0 too); ``best_epoch`` holds the best validation metric so far."""
        epoch = int(row["epoch"])
        if self.stopped is None and self.target is not None and self.target.per_epoch and self.target.hit(row):
            self._reached(row)
        if self.stopped is None and self.patience is not None and epoch - best_epoch > self.patience:
            self.stopped = {"stop_reason": "patience", "patience": int(self.patience), "best_epoch": best_epoch,
                            "epoch": epoch}
        if self.averaging is not None and epoch > 0:
            self.averaging.observe(float(row.get("val_loss", math.nan)), epoch, int(row["step"]))

    def _reached(self, row: Mapping) -> None:
        self.stopped = {"stop_reason": "stop_at", "stop_at": str(self.target),
                        "reached_at": {"step": int(row["step"]), "epoch": int(row["epoch"]),
                                       self.target.column: float(row[self.target.column])}}

    def after_step(self) -> None:
        if self.averaging is not None:
            self.averaging.after_step()

    def evaluation_weights(self) -> contextlib.AbstractContextManager:
        return self.averaging.weights() if self.averaging is not None else contextlib.nullcontext()

    def summary(self) -> dict:
        """What summary.json reports: why the run stopped early, when NT-ASGD started averaging."""
        out = dict(self.stopped or {})
        if self.averaging is not None:
            out["nt_asgd_since"] = self.averaging.since
        return out

    def state_dict(self) -> dict:
        return {"stopped": self.stopped,
                "averaging": None if self.averaging is None else self.averaging.state_dict()}

    def load_state_dict(self, state: Mapping | None) -> None:
        state = state or {}
        self.stopped = state.get("stopped")
        if self.averaging is not None and state.get("averaging") is not None:
            self.averaging.load_state_dict(state["averaging"])
