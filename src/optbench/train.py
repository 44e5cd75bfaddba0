"""The training loop: step, evaluate, log, checkpoint, resume. ``run(cfg)`` is what main.py calls.

One epoch = the task's batches; after each epoch: evaluate val/test, append a metrics.csv row, save the
checkpoint atomically. Epoch 0 is the model before training. Host synchronisation happens only when a row is
logged (every ``trainer.log_every`` steps) and at epoch ends, so the loop costs little over a bare one.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from optbench import distributed, rundir
from optbench.checks import ConfigError, check_run
from optbench.optim import build_optimizer
from optbench.schedules import apply_lr_factor, lr_factor
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


def optimizer_config(cfg: Mapping) -> dict:
    """The optim config with the task's weight decay filled in where the optimizer leaves it unset."""
    optim = dict(cfg["optim"])
    if optim.get("weight_decay") is None:
        optim["weight_decay"] = cfg["task"].get("weight_decay") or 0.0
    return optim


def schedule_config(cfg: Mapping) -> dict:
    """The task's schedule, overridden key by key by whatever the optim config sets."""
    schedule = dict(cfg["task"].get("lr_schedule") or {})
    schedule.update({k: v for k, v in (cfg["optim"].get("lr_schedule") or {}).items() if v is not None})
    return schedule


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


class Trainer:
    def __init__(self, cfg: Mapping, task: Task, optimizer: torch.optim.Optimizer, run_dir: Path,
                 device: torch.device, ctx: distributed.Context = distributed.SINGLE):
        self.cfg, self.task, self.optimizer, self.run_dir, self.device = cfg, task, optimizer, run_dir, device
        self.ctx = ctx
        trainer = cfg["trainer"]
        self.epochs = int(cfg["task"]["epochs"])
        self.log_every = int(trainer["log_every"])
        self.schedule = schedule_config(cfg)
        clip = trainer.get("grad_clip")
        self.grad_clip = float(clip if clip is not None else cfg["task"].get("grad_clip") or 0.0)
        self.model = task.model  # the module whose state is saved (task.model may get compiled below)
        self.generator = torch.Generator(device=device).manual_seed(int(cfg["seed"]))
        self.metrics_log = rundir.CsvLog(run_dir / rundir.METRICS)
        self.steps_log = rundir.CsvLog(run_dir / rundir.STEPS)
        self.epoch, self.step, self.train_time = 0, 0, 0.0
        self.best_value, self.best_row = math.inf, None
        amp = trainer.get("amp", "none")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        if trainer.get("channels_last"):
            self.model.to(memory_format=torch.channels_last)
            task.memory_format = torch.channels_last
        if trainer.get("compile"):
            task.model = torch.compile(self.model)
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            if trainer.get("sync_bn"):
                task.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task.model)
            task.model = DistributedDataParallel(task.model, device_ids=[device] if device.type == "cuda" else None)
        self.delay = None
        if int(trainer.get("staleness", 0)) > 0:
            from optbench.staleness import DelayedGradients

            self.delay = DelayedGradients(list(self.model.parameters()), int(trainer["staleness"]))
            if hasattr(optimizer, "attach_gradient_delay"):  # closed-loop YellowFin measures against fresh grads
                optimizer.attach_gradient_delay(self.delay)
        self.scale_invariant = []
        if cfg.get("log_weight_norm"):
            from optbench.models.scale_invariant import scale_invariant_weights

            self.scale_invariant = [p for _, p in scale_invariant_weights(self.model)]
        self.tensorboard = None
        if cfg.get("tensorboard") and ctx.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard") from err
            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        progress = trainer.get("progress", "auto")
        self.progress = ctx.is_main and (sys.stderr.isatty() if progress == "auto" else bool(progress))

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
            "rng_cpu": torch.get_rng_state(),
            "rng_generator": self.generator.get_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
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
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.delay is not None and "delay" in state:
            self.delay.load_state_dict(state["delay"])
        if self.ctx.is_main:
            self.metrics_log.truncate("epoch", self.epoch)
            self.steps_log.truncate("step", self.step)
        rows = self.metrics_log.rows()
        self.best_row = next((r for r in rows if float(r.get("val_" + self.task.best_metric) or math.nan)
                              == self.best_value), None)

    def checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        rundir.save_atomic(self.state_dict(), self.run_dir / rundir.CHECKPOINT,
                           keep_previous=self.run_dir / rundir.PREVIOUS_CHECKPOINT)

    # ---------------------------------------------------------------- logging
    def lr(self) -> Any:
        return self.optimizer.param_groups[0]["lr"]

    def extras(self) -> dict[str, Any]:
        extras = getattr(self.optimizer, "extras", None)
        return dict(extras()) if extras else {}

    def weight_norm(self) -> float:
        return math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in self.scale_invariant))

    def evaluate(self, splits) -> dict[str, float]:
        self.task.model.eval()
        out = {}
        for split in splits:
            for name, value in self.task.evaluate(split).items():
                out[f"{split}_{name}"] = value
        self.task.model.train()
        return out

    def log_epoch(self, row: dict) -> None:
        row = {"epoch": self.epoch, "step": self.step, "time_s": self.train_time, **row}
        row.update(self.task.extras())
        if self.scale_invariant:
            row["weight_norm"] = self.weight_norm()
        if not self.ctx.is_main:
            return
        self.metrics_log.append(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"epoch/{key}", value, self.step)
        value = row.get("val_" + self.task.best_metric)
        if value is not None and math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_row = value, row
            rundir.save_atomic({"model": self.model.state_dict(), "epoch": self.epoch, "metrics": row},
                               self.run_dir / rundir.BEST)

    def log_step(self, loss: torch.Tensor, extras: dict) -> float:
        """Write a steps.csv row; returns the (global) loss. The only host sync of ordinary steps."""
        value = self.global_mean(loss.detach().float().reshape(1))[0].item()
        row = {"step": self.step, "epoch": self.epoch, "loss": value, "lr": _scalar(self.lr())}
        row.update({k: _scalar(v) for k, v in extras.items()})
        if self.scale_invariant:
            row["weight_norm"] = self.weight_norm()
        if not self.ctx.is_main:
            return value
        self.steps_log.append(row)
        if self.tensorboard is not None:
            for key, v in row.items():
                if key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(f"step/{key}", v, self.step)
        return value

    def global_mean(self, local: torch.Tensor) -> torch.Tensor:
        """Mean over processes of per-process values already weighted by n_local * world / n_global, i.e. the
        value a single process would have computed on the whole global batch."""
        if not self.ctx.enabled:
            return local
        return distributed.all_reduce_sum(self.ctx, local.clone()) / self.ctx.world_size

    # ---------------------------------------------------------------- loop
    def train_epoch(self) -> tuple[dict, bool]:
        """One epoch; returns (epoch means of loss, task metrics, lr and extras; diverged?)."""
        task, optimizer = self.task, self.optimizer
        task.model.train()
        task.start_epoch()
        sums: dict[str, Any] = {}
        count, diverged = 0, False
        first_lr, constant_lr = None, True  # a constant float lr is logged exactly, not as a rounded mean
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=task.steps_per_epoch(), desc=f"epoch {self.epoch}/{self.epochs}", leave=False)
        world, rank = self.ctx.world_size, self.ctx.rank
        for batch in task.train_batches(self.generator):
            if world > 1:  # every process draws the same global batch and keeps its slice
                n_global = task.batch_size_of(batch)
                batch = task.shard(batch, rank, world)
                weight = task.batch_size_of(batch) * world / n_global
            with autocast:
                loss, metrics = task.loss(batch)
            if world > 1:  # DDP averages gradients over processes: weight so the result is the global mean
                loss = loss * weight
                metrics = {k: v * weight for k, v in metrics.items()}
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(optimizer)
            else:
                loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            due = self.delay.push() if self.delay is not None else True
            if due:
                if self.scaler is not None:
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            task.after_step()
            self.step += 1
            count += 1
            extras = self.extras()
            lr = self.lr()
            if count == 1:
                first_lr = lr
            if isinstance(lr, float) and lr != first_lr:
                constant_lr = False
            for key, value in (("loss", loss.detach()), ("lr", lr), *metrics.items(), *extras.items()):
                value = value.detach().float() if isinstance(value, torch.Tensor) else value
                sums[key] = sums[key] + value if key in sums else value
            if self.step % self.log_every == 0:
                value = self.log_step(loss, extras)
                if bar is not None:
                    bar.set_postfix(step=self.step, loss=f"{value:.4g}")
                if not math.isfinite(value):
                    diverged = True
                    break
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if world > 1:  # loss and task metrics are per-process; lr and optimizer extras are the same everywhere
            local = [k for k in sums if k == "loss" or k in task.metric_names]
            reduced = self.global_mean(torch.stack([torch.as_tensor(sums[k], dtype=torch.float32,
                                                                     device=self.device) for k in local]))
            sums.update(zip(local, reduced))
        means = {key: _scalar(value) / max(count, 1) for key, value in sums.items()}
        if constant_lr and isinstance(first_lr, float):
            means["lr"] = first_lr
        if not math.isfinite(means.get("loss", 0.0)):
            diverged = True
        return means, diverged

    def fit(self) -> str:
        """Train to the configured number of epochs from wherever the run stands; returns the final status."""
        splits = ("val", "test")
        if self.epoch == 0 and not self.metrics_log.rows():
            row = {"lr": _scalar(self.lr()), **self.evaluate(("train",) + splits)}
            row.update({k: _scalar(v) for k, v in self.extras().items()})
            self.log_epoch(row)
            self.checkpoint()
        while self.epoch < self.epochs:
            self.epoch += 1
            apply_lr_factor(self.optimizer, lr_factor(self.schedule, self.epoch, self.epochs))
            start = time.perf_counter()
            means, diverged = self.train_epoch()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_time += time.perf_counter() - start
            row = {"lr": means.pop("lr")}
            row.update({f"train_{k}": v for k, v in means.items() if k == "loss" or k in self.task.metric_names})
            row.update({k: v for k, v in means.items() if k != "loss" and k not in self.task.metric_names})
            if self.cfg["trainer"].get("eval_train"):
                row.update(self.evaluate(("train",)))
            if diverged:
                self.log_epoch(row)
                return "diverged"
            row.update(self.evaluate(splits))
            self.log_epoch(row)
            self.checkpoint()
        return "finished"


def _numbers(row: Mapping) -> dict:
    """A CSV row (strings) as numbers, blanks dropped."""
    return {k: float(v) for k, v in row.items() if v not in ("", None)}


def _summary(trainer: Trainer | None, status: str, started: float, cfg: Mapping, error: str | None = None) -> dict:
    summary = {"status": status, "task": cfg["task"]["name"], "optim": cfg["optim"]["name"], "seed": cfg["seed"],
               "wall_time_s": time.time() - started}
    if trainer is not None:
        rows = trainer.metrics_log.rows()
        summary.update(epoch=trainer.epoch, step=trainer.step, train_time_s=trainer.train_time,
                       final=_numbers(rows[-1]) if rows else None,
                       best=_numbers(trainer.best_row) if trainer.best_row else None)
    if error:
        summary["error"] = error
    return summary


def default_run_config(cfg: Mapping) -> dict:
    """The composed config of the same task and optimizer with nothing overridden (for the variant name)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"task={cfg['task']['name']}", f"optim={cfg['optim']['name']}"]
    if GlobalHydra.instance().is_initialized():
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def run(cfg: DictConfig | Mapping) -> Path:
    """Run (or resume, or skip if finished) the experiment a composed config describes; returns its run dir.
    Under torchrun every process calls this; only rank 0 writes the run directory."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    check_run(cfg)
    ctx = distributed.from_environment()
    device = resolve_device(str(cfg["device"]), ctx)
    distributed.setup(ctx, device)  # once per process; a sweep's later runs reuse the group
    return _run(cfg, ctx, device)


def _run(cfg: Mapping, ctx: distributed.Context, device: torch.device) -> Path:
    say = print if ctx.is_main else (lambda *a, **k: None)
    variant = rundir.variant_name(cfg, default_run_config(cfg))
    run_dir = rundir.run_path(cfg["results_dir"], cfg["task"]["name"], cfg["optim"]["name"], variant, cfg["seed"])
    summary = rundir.read_summary(run_dir)
    if cfg.get("resume", True) and summary and summary.get("status") in ("finished", "diverged"):
        say(f"optbench: already {summary['status']}, not redone: {run_dir}")
        return run_dir
    if ctx.is_main:
        if not cfg.get("resume", True) and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(ctx)
    say(f"optbench: run directory {run_dir}" + (f" ({ctx.world_size} processes)" if ctx.enabled else ""),
        flush=True)

    torch.manual_seed(int(cfg["seed"]))
    task = build_task(cfg["task"], cfg["data_dir"], device)
    optimizer = build_optimizer(task.model.parameters(), optimizer_config(cfg))
    trainer = Trainer(cfg, task, optimizer, run_dir, device, ctx)
    checkpoint = rundir.load_checkpoint(run_dir, map_location=device)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        say(f"optbench: resuming from epoch {trainer.epoch} (step {trainer.step})", flush=True)
    elif ctx.is_main:  # a fresh start: drop logs of an attempt that died before its first checkpoint
        for name in (rundir.METRICS, rundir.STEPS):
            (run_dir / name).unlink(missing_ok=True)
        trainer.metrics_log.fields, trainer.steps_log.fields = [], []
    distributed.barrier(ctx)  # nobody writes before every process has read the checkpoint
    started = time.time()
    if ctx.is_main:
        OmegaConf.save(OmegaConf.create(cfg), run_dir / rundir.CONFIG)
        rundir.write_json(run_dir / rundir.SUMMARY, _summary(trainer, "running", started, cfg))
    try:
        status = trainer.fit()
    except Exception as err:
        if ctx.is_main:
            rundir.write_json(run_dir / rundir.SUMMARY, _summary(trainer, "failed", started, cfg, repr(err)))
        raise
    finally:
        if trainer.tensorboard is not None:
            trainer.tensorboard.close()
    if ctx.is_main:
        rundir.write_json(run_dir / rundir.SUMMARY, _summary(trainer, status, started, cfg))
        final = trainer.metrics_log.rows()[-1]
        say(f"optbench: {status} after epoch {trainer.epoch}: " + ", ".join(
            f"{k}={float(final[k]):.4g}" for k in final if k.startswith(("val_", "test_")) and final[k]), flush=True)
        say(f"optbench: results in {run_dir}", flush=True)
    return run_dir
