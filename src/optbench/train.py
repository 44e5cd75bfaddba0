"""The training loop: step, evaluate, log, checkpoint, resume. ``run(cfg)`` is what main.py calls.

One epoch = the task's batches; after each epoch: evaluate val/test, append a metrics.csv row, save the
checkpoint atomically. Epoch 0 is the model before training. Host synchronisation happens only when a row is
logged (every ``trainer.log_every`` steps) and at epoch ends, so the loop costs little over a bare one.
The run ends after ``task.epochs`` epochs, or ``task.max_steps`` steps (the last epoch then logged as it stands),
or earlier by a run control (optbench.controls: a stop_at target, patience); schedules: optbench.schedules.
The pieces around a step (mixed precision, data-parallel weighting, epoch means, the progress bar) live in
optbench.loop; the optimizer is reached only through torch's API and optbench.optim.protocol.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from optbench import checkpoints, distributed, lifecycle, rundir, threads, tuning
from optbench.checks import check_run
from optbench.controls import RunControls, check_epoch_column
from optbench.errors import ConfigError, RunInterrupted, RunLockedError, RunStoreError
from optbench.interrupts import GracefulStop
from optbench.loop import EpochMeans, Precision, Progress, Sharding, to_float
from optbench.optim import build_optimizer, protocol
from optbench.run_config import default_run_config, optimizer_config, schedule_config
from optbench.schedules import Schedule
from optbench.tasks import Task, build_task


def resolve_device(name: str, ctx: distributed.Context = distributed.SINGLE) -> torch.device:
    """cpu / cuda / auto -> a concrete device. Under torchrun each process takes cuda:LOCAL_RANK; in a sweep
    with several GPUs visible each job pins itself to one (job number modulo GPU count)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    if ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cuda", _sweep_job_number() % torch.cuda.device_count())


def _sweep_job_number() -> int:
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num or 0)
    except Exception:  # not inside a Hydra app
        return 0


class Trainer:
    def __init__(self, cfg: Mapping, task: Task, optimizer: torch.optim.Optimizer, run_dir: Path,
                 device: torch.device, ctx: distributed.Context = distributed.SINGLE):
        self.cfg, self.task, self.optimizer, self.run_dir, self.device = cfg, task, optimizer, run_dir, device
        trainer = cfg["trainer"]
        self.epochs, self.log_every = int(cfg["task"]["epochs"]), int(trainer["log_every"])
        self.max_steps = cfg["task"].get("max_steps")  # a budget in steps replaces the epochs
        if self.max_steps is not None:
            self.epochs = math.ceil(self.max_steps / task.steps_per_epoch())
        clip = trainer.get("grad_clip")
        self.grad_clip = float(clip if clip is not None else cfg["task"].get("grad_clip") or 0.0)
        self.model = task.model  # the plain module whose state is saved
        self.generator = torch.Generator(device=device).manual_seed(int(cfg["seed"]))
        self.metrics_log = rundir.CsvLog(run_dir / rundir.METRICS)
        self.steps_log = rundir.CsvLog(run_dir / rundir.STEPS)
        self.epoch, self.step, self.train_time = 0, 0, 0.0
        self.best_value, self.best_row, self.best_epoch = math.inf, None, 0
        self.stop = None  # an optbench.interrupts.GracefulStop while run() drives the trainer
        self.partial = self.resumed_partial = None  # where an interrupted epoch stopped (see train_epoch)
        self.diverged_at: int | None = None
        self.precision = Precision(trainer.get("amp", "none"), device)
        self.sharding = Sharding(ctx, task)
        self.ctx = ctx
        self._prepare_model(trainer)
        self.delay = self._gradient_delay(int(trainer.get("staleness", 0)))
        self.scale_invariant = self._scale_invariant_weights() if cfg.get("log_weight_norm") else []
        self.schedule, self.controls = self._run_controls(cfg)
        self.tensorboard = self._tensorboard() if cfg.get("tensorboard") and ctx.is_main else None
        progress = trainer.get("progress", "auto")
        bar = sys.stderr.isatty() if progress == "auto" else progress is True  # "none": neither bar nor lines
        self.progress = Progress(ctx.is_main and bar, lines=ctx.is_main and progress != "none")

    def _prepare_model(self, trainer: Mapping) -> None:
        """channels_last, SyncBatchNorm, torch.compile and DistributedDataParallel, in that order."""
        if trainer.get("channels_last"):
            self.task.to_channels_last()
        if self.ctx.enabled and trainer.get("sync_bn"):  # replaces the model's BatchNorm children in place
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if trainer.get("compile"):
            self.task.wrap_model(torch.compile)
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self.task.wrap_model(lambda net: DistributedDataParallel(net, device_ids=ids))

    def _run_controls(self, cfg: Mapping) -> tuple[Schedule, RunControls]:
        """The lr schedule and the run controls, their columns checked against what this run logs."""
        settings = schedule_config(cfg)
        if settings.get("name") == "plateau" and settings.get("metric") is not None:
            check_epoch_column("lr_schedule.metric", settings["metric"], self.task.metric_names)
        steps = self.max_steps or self.epochs * self.task.steps_per_epoch()
        step_columns = ["loss", "lr", *protocol.extras(self.optimizer)]
        step_columns += ["weight_norm", "effective_step"] * bool(self.scale_invariant)
        controls = RunControls(cfg["trainer"], self.task.metric_names, step_columns, self.model)
        return Schedule(settings, self.epochs, steps), controls

    def _gradient_delay(self, staleness: int):
        if staleness == 0:
            return None
        from optbench.staleness import DelayedGradients

        delay = DelayedGradients(list(self.model.parameters()), staleness)
        protocol.attach_gradient_delay(self.optimizer, delay)
        return delay

    def _scale_invariant_weights(self) -> list[torch.Tensor]:
        from optbench.models.scale_invariant import scale_invariant_weights

        return [p for _, p in scale_invariant_weights(self.model)]

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard") from err
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "task": self.task.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "train_time": self.train_time,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "schedule": self.schedule.state_dict(),
            "controls": self.controls.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_generator": self.generator.get_state(),
            "scaler": self.precision.state_dict(),
            "partial": self.partial,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.delay is not None:
            state["delay"] = self.delay.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.task.load_state_dict(state["task"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_time, self.best_value = float(state["train_time"]), float(state["best_value"])
        torch.set_rng_state(state["rng_cpu"])
        self.generator.set_state(state["rng_generator"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.precision.load_state_dict(state.get("scaler") or {})
        self.resumed_partial = state.get("partial")
        if self.delay is not None and "delay" in state:
            self.delay.load_state_dict(state["delay"])
        self.schedule.load_state_dict(state.get("schedule"))
        self.controls.load_state_dict(state.get("controls"))
        if self.ctx.is_main:
            self.metrics_log.truncate("epoch", self.epoch)
            self.steps_log.truncate("step", self.step)
        column = "val_" + self.task.best_metric
        self.best_row = next((r for r in self.metrics_log.rows()
                              if float(r.get(column) or math.nan) == self.best_value), None)
        older = int(float(self.best_row["epoch"])) if self.best_row else 0  # a checkpoint without best_epoch
        self.best_epoch = int(state.get("best_epoch", older))

    def checkpoint(self) -> None:
        if self.ctx.is_main:
            checkpoints.save_atomic(self.state_dict(), self.run_dir / rundir.CHECKPOINT,
                               keep_previous=self.run_dir / rundir.PREVIOUS_CHECKPOINT)

    # ---------------------------------------------------------------- logging
    def lr(self) -> Any:
        return self.optimizer.param_groups[0]["lr"]

    def scale_invariant_columns(self) -> dict[str, float]:
        """log_weight_norm's columns. ``weight_norm``: the norm of all scale-invariant weights together.
        ``effective_step``: the mean over those weights of lr / ||w||^2, the step their direction w / ||w||
        effectively takes (AdamP, Heo et al. 2021, whose ImageNet analysis averages it over layers); lr is the one
        the optimizer applies now (param_groups[0], after the schedule). One host sync for all weights."""
        squares = torch.stack([p.detach().float().pow(2).sum() for p in self.scale_invariant]).tolist()
        lr = to_float(self.lr())
        steps = [lr / s if s > 0 else math.inf for s in squares]
        return {"weight_norm": math.sqrt(sum(squares)), "effective_step": sum(steps) / len(steps)}

    def evaluate(self, splits) -> dict[str, float]:
        self.task.net.eval()
        out = {f"{split}_{name}": value for split in splits for name, value in self.task.evaluate(split).items()}
        self.task.net.train()
        return out

    def log_epoch(self, row: dict) -> None:
        row = {"epoch": self.epoch, "step": self.step, "time_s": self.train_time, **row, **self.task.extras()}
        if self.scale_invariant:
            row.update(self.scale_invariant_columns())
        if not self.ctx.is_main:
            return
        self.metrics_log.append(row)
        self._to_tensorboard("epoch", row)
        value = row.get("val_" + self.task.best_metric)
        if value is not None and math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_row, self.best_epoch = value, row, self.epoch
            checkpoints.save_atomic({"model": self.model.state_dict(), "epoch": self.epoch, "metrics": row},
                               self.run_dir / rundir.BEST)

    def log_step(self, loss: torch.Tensor, extras: dict) -> dict:
        """Write a steps.csv row and return it (the loss is the global one). The only host sync of ordinary
        steps."""
        value = self.sharding.global_mean(loss.detach().float().reshape(1))[0].item()
        row = {"step": self.step, "epoch": self.epoch, "loss": value, "lr": to_float(self.lr())}
        row.update({k: to_float(v) for k, v in extras.items()})
        if self.scale_invariant:
            row.update(self.scale_invariant_columns())
        if self.ctx.is_main:
            self.steps_log.append(row)
            self._to_tensorboard("step", row)
        return row

    def _to_tensorboard(self, prefix: str, row: dict) -> None:
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, self.step)

    # ---------------------------------------------------------------- loop
    def train_epoch(self) -> tuple[EpochMeans, str]:
        """One epoch (or the rest of one a stop interrupted); returns its means and how it ended: 'done' (also
        when task.max_steps ends it early), 'reached' (a stop_at target at a logged step), 'diverged', or
        'interrupted' (a stop was requested: ``self.partial`` describes where to resume)."""
        self.task.net.train()
        partial, self.partial = self.resumed_partial, None
        self.resumed_partial = None
        if partial is None:
            self.task.start_epoch()
            partial = {"generator": self.generator.get_state(), "batches": 0, "means": None}
        self.generator.set_state(partial["generator"])
        means = EpochMeans.from_state(partial["means"])
        with self.progress.epoch(self.epoch, self.epochs, self.task.steps_per_epoch()) as bar:
            for index, batch in enumerate(self.task.train_batches(self.generator)):
                if index < partial["batches"]:  # drawn again (same randomness), trained on before the stop
                    continue
                ended = self.train_step(batch, means, bar)
                if ended is not None:
                    return means, ended
                if self.stop_requested(logged=self.step % self.log_every == 0):
                    self.partial = {**partial, "batches": index + 1, "means": means.state_dict()}
                    return means, "interrupted"
        return means, "done"

    def train_step(self, batch: Any, means: EpochMeans, bar: Progress) -> str | None:
        """One optimizer step with its bookkeeping; returns how the epoch ends here ('diverged', 'reached',
        'done' at task.max_steps), or None to go on."""
        if self.schedule.per_step:
            self.apply_lr_factor()
        loss, metrics = self.forward_backward(batch)
        self.update()
        self.step += 1
        self.controls.after_step()
        extras = protocol.extras(self.optimizer)
        means.add({"loss": loss, "lr": self.lr(), **metrics, **extras})
        ended = None
        if self.step % self.log_every == 0:
            row = self.log_step(loss, extras)
            bar.show(self.step, row["loss"])
            if not math.isfinite(row["loss"]):
                self.diverged_at = self.step
                return "diverged"
            ended = "reached" if self.controls.step_row(row) else None
        bar.advance()
        if ended is None and self.max_steps is not None and self.step >= self.max_steps:
            ended = "done"
        return ended

    def apply_lr_factor(self) -> None:
        """The schedule's factor for the coming update, handed to the optimizer (which may scale its own lr)."""
        protocol.set_lr_factor(self.optimizer, self.schedule.factor(self.epoch, self.step))

    def forward_backward(self, batch: Any) -> tuple[torch.Tensor, dict]:
        batch, weight = self.sharding.share(batch)
        with self.precision.autocast():
            loss, metrics = self.task.loss(batch)
        if weight is not None:  # DDP averages gradients over processes: weight so the result is the global mean
            loss, metrics = loss * weight, {k: v * weight for k, v in metrics.items()}
        self.precision.backward(loss, self.optimizer)
        return loss, metrics

    def update(self) -> None:
        """Clip, step (unless asynchrony's pipeline is still filling), clear the gradients."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.delay is None or self.delay.push():
            self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.task.after_step()

    def epoch_means(self, means: EpochMeans) -> dict[str, float]:
        """Loss and task metrics are per process (reduced here); lr and optimizer extras are the same everywhere."""
        if self.ctx.enabled:
            local = [k for k in means.sums if k == "loss" or k in self.task.metric_names]
            stacked = torch.stack([torch.as_tensor(means.sums[k], dtype=torch.float32, device=self.device)
                                   for k in local])
            means.sums.update(zip(local, self.sharding.global_mean(stacked)))
        return means.means()

    def fit(self) -> str:
        """Train to the end of the budget (task.epochs or task.max_steps) from wherever the run stands, unless a
        run control ends it first; returns the final status: finished, reached (a stop_at target), diverged, or
        interrupted (a stop was requested; the checkpoint holds where it stopped)."""
        if self.epoch == 0 and not self.metrics_log.rows() and self.resumed_partial is None:
            row = {"lr": to_float(self.lr()), **self.evaluate(("train", "val", "test"))}
            row.update({k: to_float(v) for k, v in protocol.extras(self.optimizer).items()})
            self.log_epoch(row)
            self.controls.epoch_row({"epoch": 0, "step": 0, **row}, self.best_epoch)
            self.checkpoint()
        protocol.plan(self.optimizer, self.remaining_steps())
        while self.controls.stopped is None and not self.budget_spent():
            self.epoch += 1
            outcome = self.train_and_log_epoch()
            if outcome == "interrupted":
                self.epoch -= 1  # the checkpoint counts finished epochs; self.partial holds the rest
                self.checkpoint()
                return "interrupted"
            if outcome == "diverged":
                return "diverged"
            self.checkpoint()
            if self.controls.stopped is None and self.stop_requested():
                return "interrupted"
        return self.controls.status

    def budget_spent(self) -> bool:
        return self.step >= self.max_steps if self.max_steps is not None else self.epoch >= self.epochs

    def remaining_steps(self) -> int:
        """What the optimizer is told to expect (optbench.optim.protocol.plan)."""
        if self.max_steps is not None:
            return max(self.max_steps - self.step, 0)
        return (self.epochs - self.epoch) * self.task.steps_per_epoch()

    def stop_requested(self, logged: bool = True) -> bool:
        """Whether to stop for a signal now: at every step in one process; under torchrun at logged steps and
        epoch ends (where the processes synchronise anyway), all of them together."""
        if self.stop is None:
            return False
        if not self.ctx.enabled:
            return self.stop.requested
        return logged and distributed.any_process(self.ctx, self.stop.requested, self.device)

    def train_and_log_epoch(self) -> str:
        """One epoch with its metrics.csv row (none when interrupted); returns train_epoch's outcome. Evaluation
        and best.pth use NT-ASGD's averaged weights once averaging has started."""
        self.apply_lr_factor()
        start = time.perf_counter()
        means, outcome = self.train_epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_time += time.perf_counter() - start
        if outcome == "interrupted":
            return outcome
        row = self.train_row(self.epoch_means(means))
        with self.controls.evaluation_weights():
            if self.cfg["trainer"].get("eval_train"):
                row.update(self.evaluate(("train",)))
            if outcome != "diverged" and not math.isfinite(row.get("train_loss", 0.0)):
                outcome, self.diverged_at = "diverged", self.step
            if outcome != "diverged":
                row.update(self.evaluate(("val", "test")))
            self.log_epoch(row)
        if outcome != "diverged":  # the epoch's row decides plateau reductions, early stops, NT-ASGD's switch
            self.schedule.end_epoch(row)
            self.controls.epoch_row({"epoch": self.epoch, "step": self.step, **row}, self.best_epoch)
        metric = next((m for m in self.task.metric_names), "loss")
        self.progress.epoch_done(self.epoch, self.epochs, row, metric)
        return outcome

    def train_row(self, means: dict[str, float]) -> dict:
        """The epoch's training columns: lr, train_loss and the task's metrics, then optimizer extras."""
        task_keys = ("loss",) + tuple(self.task.metric_names)
        row = {"lr": means.pop("lr")}
        row.update({f"train_{k}": v for k, v in means.items() if k in task_keys})
        row.update({k: v for k, v in means.items() if k not in task_keys})
        return row


# -------------------------------------------------------------------- one run, from config to run directory


def _numbers(row: Mapping | None) -> dict | None:
    """A CSV row (strings) as numbers, blanks dropped."""
    return None if row is None else {k: float(v) for k, v in row.items() if v not in ("", None)}


def _progress(trainer: Trainer) -> dict:
    """What summary.json reports of the trainer's progress (and of its run controls: stop_reason ...)."""
    rows = trainer.metrics_log.rows()
    return {"epoch": trainer.epoch, "step": trainer.step, "train_time_s": trainer.train_time,
            "final": _numbers(rows[-1]) if rows else None, "best": _numbers(trainer.best_row),
            **trainer.controls.summary()}


def run(cfg: DictConfig | Mapping) -> Path:
    """Run (or resume, or skip if finished) the experiment a composed config describes; returns its run dir.
    Under torchrun every process calls this; only rank 0 writes the run directory. Errors a user can act on are
    optbench.errors.OptbenchError (the command line prints them as one line); in a sweep, a run another process
    holds is skipped with a line in the log."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = tuning.apply(cfg)  # a tuning point (configs/tune) becomes the optimizer settings it stands for
    check_run(cfg)
    ctx = distributed.from_environment()
    device = resolve_device(str(cfg["device"]), ctx)
    distributed.setup(ctx, device)  # once per process; a sweep's later runs reuse the group
    try:
        return _run(cfg, ctx, device)
    except RunLockedError as err:
        if not _in_sweep():
            raise
        print(f"optbench: skipped: {err}", flush=True)
        return err.run_dir


def _in_sweep() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # not inside a Hydra app
        return False


def _command_line_overrides() -> list[str] | None:
    """The running Hydra job's overrides (None outside a Hydra app: a config passed in by a program)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not inside a Hydra app
        return None


def _run(cfg: Mapping, ctx: distributed.Context, device: torch.device) -> Path:
    say = print if ctx.is_main else (lambda *a, **k: None)
    variant = rundir.variant_name(cfg, default_run_config(cfg, _command_line_overrides()))
    run_dir = rundir.run_path(cfg["results_dir"], cfg["task"]["name"], cfg["optim"]["name"], variant, cfg["seed"])
    resume = cfg.get("resume", True)
    if resume and _already_done(run_dir, say):
        return run_dir
    with lifecycle.claimed(run_dir, Path(cfg["results_dir"]), ctx):
        if resume and _already_done(run_dir, say):  # it may have finished while we waited for the lock
            return run_dir
        if not resume and ctx.is_main:
            lifecycle.clear(run_dir)
        summary = rundir.read_summary(run_dir)
        changed = lifecycle.resumable_changes(run_dir, cfg, summary)
        processes = f" ({ctx.world_size} process{'es' * (ctx.world_size > 1)})" if ctx.enabled else ""
        say(f"optbench: run directory {run_dir}{processes}", flush=True)
        trainer = _build_trainer(cfg, run_dir, device, ctx, say)
        status = _fit_and_record(trainer, cfg, ctx, lifecycle.RunRecord(run_dir, cfg, summary, changed))
    if ctx.is_main:
        final = trainer.metrics_log.rows()[-1]
        say(f"optbench: {status} after epoch {trainer.epoch}: " + ", ".join(
            f"{k}={float(final[k]):.4g}" for k in final if k.startswith(("val_", "test_")) and final[k]), flush=True)
        say(f"optbench: results in {run_dir}", flush=True)
    return run_dir


def _already_done(run_dir: Path, say) -> bool:
    summary = rundir.read_summary(run_dir)
    if summary and summary.get("status") in lifecycle.DONE:
        say(f"optbench: already {summary['status']}, not redone: {run_dir}")
        return True
    return False


def _build_trainer(cfg: Mapping, run_dir: Path, device: torch.device, ctx: distributed.Context, say) -> Trainer:
    """Task, optimizer and trainer, resumed from the run directory's checkpoint when there is one."""
    torch.manual_seed(int(cfg["seed"]))
    task = build_task(cfg["task"], cfg["data_dir"], device)
    threads.apply(cfg["trainer"].get("threads", "auto"), task.model, device)
    optimizer = build_optimizer(task.model.parameters(), optimizer_config(cfg))
    trainer = Trainer(cfg, task, optimizer, run_dir, device, ctx)
    checkpoint = checkpoints.load_checkpoint(run_dir, map_location=device)
    if checkpoint is not None:
        if not trainer.metrics_log.rows():
            raise RunStoreError(f"{run_dir}: {rundir.METRICS} is missing or empty but {rundir.CHECKPOINT} is at epoch "
                                f"{checkpoint['epoch']}; restore {rundir.METRICS}, or pass resume=false to start the "
                                "run over (the checkpoint alone cannot rebuild the log)")
        trainer.load_state_dict(checkpoint)
        where = f"epoch {trainer.epoch} (step {trainer.step})"
        say(f"optbench: resuming from {where}" + (" mid-epoch" if trainer.resumed_partial else ""), flush=True)
    elif ctx.is_main:  # a fresh start: drop logs of an attempt that died before its first checkpoint
        for name in (rundir.METRICS, rundir.STEPS):
            (run_dir / name).unlink(missing_ok=True)
        trainer.metrics_log.fields, trainer.steps_log.fields = [], []
    if ctx.is_main and not (run_dir / rundir.CONFIG).exists():  # the config the run starts with, kept as it was
        OmegaConf.save(OmegaConf.create(cfg), run_dir / rundir.CONFIG)
    distributed.barrier(ctx)  # nobody writes before every process has read the checkpoint
    return trainer


def _fit_and_record(trainer: Trainer, cfg: Mapping, ctx: distributed.Context, record: lifecycle.RunRecord) -> str:
    """trainer.fit() under a graceful stop, with summary.json kept true (running, then the outcome)."""
    write = record.write if ctx.is_main else (lambda *a, **k: None)
    write("running", _progress(trainer))
    with GracefulStop() as stop:
        trainer.stop = stop
        try:
            status = trainer.fit()
        except OSError as err:  # a full disk, a vanished mount: the last checkpoint is intact
            problem = f"cannot write {err.filename or 'the run directory'}: {err.strerror or err}"
            _write_quietly(write, "failed", _progress(trainer), error=problem)
            raise RunStoreError(f"{problem}; the run resumes from its last checkpoint once that is fixed") from None
        except KeyboardInterrupt:
            _write_quietly(write, "interrupted", _progress(trainer), reason="stopped at once by a second signal")
            raise
        except Exception as err:
            _write_quietly(write, "failed", _progress(trainer), error=repr(err))
            raise
        finally:
            if trainer.tensorboard is not None:
                trainer.tensorboard.close()
        write(status, _progress(trainer), **_reason(trainer, status, stop))
        if status in rundir.FINAL and ctx.is_main:
            lifecycle.prune(trainer.run_dir, cfg["trainer"].get("keep", "last"))
        if status == "interrupted":
            stop.pass_on()
            raise RunInterrupted(stop.signum, f"stopped by {signal.Signals(stop.signum).name} at step "
                                 f"{trainer.step}; checkpoint and logs written, re-run the same command to resume")
    return status


def _write_quietly(write, *args, **kwargs) -> None:
    """Record a failure if the disk allows; the error being reported matters more than the summary."""
    try:
        write(*args, **kwargs)
    except OSError:
        pass


def _reason(trainer: Trainer, status: str, stop: GracefulStop) -> dict:
    if status == "diverged":
        return {"reason": f"the training loss became non-finite by step {trainer.diverged_at}"}
    if status == "interrupted":
        return {"reason": f"stopped by {signal.Signals(stop.signum).name} at step {trainer.step}"}
    return {}
