"""Median optimizer.step() time on the parameters of a ResNet-18 (CIFAR variant: 11.2M parameters, 62 tensors)
with random gradients, for every optimizer in optbench next to torch's Adam(foreach=True) and next to the
official implementations where a package has one, all in one process. Prints a markdown table of ratios.

    python benchmarks/optim_step.py                   # every case
    python benchmarks/optim_step.py --only AdamP SGDP # cases whose name contains one of these
    python benchmarks/optim_step.py --compile         # also torch.compile'd steps of optbench's optimizers
    python benchmarks/optim_step.py --device cuda     # on a GPU: the multi-tensor paths vs torch foreach and fused

On a GPU every optbench optimizer's default is its multi-tensor (torch._foreach_*) path; torch's Adam and SGD
run both their foreach and their fused (one CUDA kernel) implementations, so each row reads against both.

The first step of every case is untimed: it allocates the state and, for the fused CPU kernels of AggMo,
Expectigrad, AdamP and SGDP, compiles them (about 35 s each on 2 cores with a cold Inductor cache).

Gradients of the scale-invariant weights (conv before batch norm) are made orthogonal to the current weights
before every step, as backprop through batch norm makes them, so AdamP/SGDP take their projection branch.
Cases are timed round-robin (each round: every case, ``--steps`` steps) so load from other processes spreads
over all of them; ratios compare medians.

To add an optimizer: one ``Case(name, factory, reference=...)`` line in CASES. ``factory(params)`` builds it;
``reference`` names the case it is compared against (its official implementation, or a torch baseline).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from optbench.models import build_model
from optbench.models.scale_invariant import scale_invariant_weights
from optbench.optim import Hypergrad
from optbench.optim import SGDP, AdamP, AggMo, Expectigrad, YFOptimizer

BASELINE = "torch Adam (foreach)"
FUSED_BASELINE = "torch Adam (fused)"


def _official(module: str, attr: str) -> Callable[..., torch.optim.Optimizer]:
    """A class from an optional package, imported when the case is built (ImportError skips the case)."""

    def build(params, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(params, **kwargs)

    return build


@dataclass
class Case:
    name: str
    factory: Callable[[list], torch.optim.Optimizer]
    reference: str | None = None  # name of the case this one is compared to in the last column
    compilable: bool = False  # also time a torch.compile'd step with --compile


CASES: list[Case] = [
    Case(BASELINE, lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
    Case(FUSED_BASELINE, lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), BASELINE),
    # AggMo, Expectigrad, AdamP, SGDP: the default (on the CPU, for this 11M-parameter group, the fused kernel of
    # optim/_fused.py; off it the multi-tensor path), and the eager per-tensor path next to it
    Case("AggMo", lambda ps: AggMo(ps, lr=0.01, betas=(0.0, 0.9, 0.99)), "torch_optimizer AggMo", True),
    Case("AggMo foreach=False", lambda ps: AggMo(ps, lr=0.01, betas=(0.0, 0.9, 0.99), foreach=False), "AggMo"),
    Case("torch_optimizer AggMo", lambda ps: _official("torch_optimizer", "AggMo")(ps, lr=0.01)),
    Case("Expectigrad", lambda ps: Expectigrad(ps, lr=1e-3), "official Expectigrad", True),
    Case("Expectigrad foreach=False", lambda ps: Expectigrad(ps, lr=1e-3, foreach=False), "Expectigrad"),
    Case("official Expectigrad", lambda ps: _official("expectigrad.pytorch", "Expectigrad")(ps, lr=1e-3)),
    # Hypergradient family (configs/optim/*_hd.yaml, *op_*lop.yaml): SGD-HD next to momentum SGD, Adam-HD next to
    # Adam, each variant next to its HD counterpart; foreach=None picks the per-tensor path on the CPU
    Case("SGD-HD", lambda ps: Hypergrad(ps, lr=1e-3, hypergrad_lr=1e-3), "torch SGD momentum (foreach)"),
    Case("SGD-HD foreach=True", lambda ps: Hypergrad(ps, lr=1e-3, hypergrad_lr=1e-3, foreach=True), "SGD-HD"),
    Case("SGDN-HD", lambda ps: Hypergrad(ps, lr=1e-3, hypergrad_lr=1e-3, model_opt="sgdn"),
         "torch SGD nesterov (foreach)"),
    Case("torch SGD nesterov (foreach)",
         lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True, foreach=True)),
    Case("Adam-HD", lambda ps: Hypergrad(ps, lr=1e-3, hypergrad_lr=1e-7, model_opt="adam"), BASELINE),
    Case("Adam-HD foreach=True",
         lambda ps: Hypergrad(ps, lr=1e-3, hypergrad_lr=1e-7, model_opt="adam", foreach=True), "Adam-HD"),
    *[Case(f"{m}op-{lo}lop", lambda ps, m=m, lo=lo: Hypergrad(
        ps, lr=1e-3, hypergrad_lr=1e-7 if m == "Adam" else 1e-3, model_opt=m.lower(), lr_opt=lo.lower()),
        f"{m}-HD") for m, lo in (("SGD", "SGDN"), ("SGD", "Adam"), ("SGDN", "SGDN"), ("SGDN", "Adam"),
                                 ("Adam", "Adam"), ("Adam", "SGDN"))],
    Case("AdamP", lambda ps: AdamP(ps, lr=1e-3, weight_decay=1e-2), "official AdamP", True),
    Case("AdamP foreach=False", lambda ps: AdamP(ps, lr=1e-3, weight_decay=1e-2, foreach=False), "AdamP"),
    Case("official AdamP", lambda ps: _official("adamp", "AdamP")(ps, lr=1e-3, weight_decay=1e-2)),
    Case("SGDP", lambda ps: SGDP(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5), "official SGDP",
         True),
    Case("SGDP foreach=False",
         lambda ps: SGDP(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5, foreach=False), "SGDP"),
    Case("official SGDP",
         lambda ps: _official("adamp", "SGDP")(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5)),
    # YellowFin has no official package; its reference is the momentum SGD it tunes (the tuner's overhead)
    Case("YFOptimizer", lambda ps: YFOptimizer(ps), "torch SGD momentum (foreach)"),
    Case("YFOptimizer closed loop", lambda ps: YFOptimizer(ps, closed_loop=True), "torch SGD momentum (foreach)"),
    Case("torch SGD momentum (foreach)", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, foreach=True)),
    Case("torch SGD momentum (fused)", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, fused=True),
         "torch SGD momentum (foreach)"),
]


class Problem:
    """Parameters and gradients shaped like a ResNet-18; each case gets its own copy of the parameters."""

    def __init__(self, device: torch.device, seed: int = 0, model_name: str = "resnet18"):
        torch.manual_seed(seed)
        model = build_model(model_name, num_classes=10)
        invariant = {id(w) for _, w in scale_invariant_weights(model)}
        self.init = [p.detach().to(device) for p in model.parameters()]
        self.invariant = [id(p) in invariant for p in model.parameters()]
        gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.grads = [torch.randn(p.shape, generator=gen).mul_(1e-2).to(device) for p in self.init]

    def fresh_params(self) -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(p.clone()) for p in self.init]
        for p, g in zip(params, self.grads):
            p.grad = g
        return params

    @torch.no_grad()
    def orthogonalise(self, params: list[torch.nn.Parameter]) -> None:
        """Make the gradient of each scale-invariant weight orthogonal to it, per output channel."""
        for p, g, inv in zip(params, self.grads, self.invariant):
            if inv:
                rows, g_rows = p.view(p.shape[0], -1), g.view(p.shape[0], -1)
                coef = (rows * g_rows).sum(1, keepdim=True) / (rows * rows).sum(1, keepdim=True)
                g_rows.sub_(coef * rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cases: list[Case], device: torch.device, rounds: int, steps: int,
        clock: Callable[[], float] = time.perf_counter, model_name: str = "resnet18") -> dict[str, float]:
    problem = Problem(device, model_name=model_name)
    built = {}
    for case in cases:
        params = problem.fresh_params()
        try:
            opt = case.factory(params)
            problem.orthogonalise(params)
            opt.step()  # state allocation and first-call costs are not timed
        except (ImportError, RuntimeError, TypeError) as exc:  # a package not installed; no fused=True in torch
            print(f"skipping {case.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        built[case.name] = (params, opt, [])
    for _ in range(rounds):
        for name, (params, opt, times) in built.items():
            for _ in range(steps):
                problem.orthogonalise(params)
                _sync(device)
                start = clock()
                opt.step()
                _sync(device)
                times.append(clock() - start)
    return {name: statistics.median(times) * 1e3 for name, (_, _, times) in built.items()}


def compiled(case: Case) -> Case:
    """torch.compile of the whole multi-tensor step (one graph over all tensors; the per-tensor path's loops would
    unroll into a graph too large to compile in reasonable time). Unlike the fused path, lr is a Python float
    here: a schedule changing it recompiles."""
    def factory(ps):
        opt = case.factory(ps)
        for group in opt.param_groups:
            if "foreach" in group:
                group["foreach"], group["fused"] = True, False
        opt.step = torch.compile(opt.step)
        return opt

    return Case(f"{case.name} (compiled)", factory, case.name)


def table(cases: list[Case], ms: dict[str, float]) -> str:
    lines = ["| optimizer | median ms | x Adam-foreach | x Adam-fused | reference | x reference |",
             "|---|---:|---:|---:|---|---:|"]
    base, fused = ms.get(BASELINE), ms.get(FUSED_BASELINE)
    for case in cases:
        if case.name not in ms:
            continue
        t = ms[case.name]
        vs_base = f"{t / base:.2f}" if base else "-"
        vs_fused = f"{t / fused:.2f}" if fused else "-"
        ref = case.reference if case.reference in ms else None
        vs_ref = f"{t / ms[ref]:.2f}" if ref else "-"
        digits = 1 if t >= 1 else 3  # a GPU's multi-tensor steps take a fraction of a millisecond
        lines.append(f"| {case.name} | {t:.{digits}f} | {vs_base} | {vs_fused} | {ref or '-'} | {vs_ref} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="substrings of case names to run (the baseline always runs)")
    parser.add_argument("--model", default="resnet18",
                        help="whose parameters (an optbench model name; resnet20 for a quick check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd steps of optbench's cases")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: CPU time of this process, robust to other processes on a shared machine "
                             "(use with --threads 1; it sums over threads)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in CASES if c.name in (BASELINE, FUSED_BASELINE) or not args.only
             or any(s in c.name for s in args.only)]
    if args.compile:
        cases += [compiled(c) for c in cases if c.compilable]
    device = torch.device(args.device)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    ms = run(cases, device, args.rounds, args.steps, clock, args.model)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()}-thread CPU"
    print(f"\noptimizer.step() on {args.model} parameters (device={device}: {where}, torch {torch.__version__}, "
          f"{args.clock} time, median of {args.rounds} rounds x {args.steps} steps)\n")
    print(table(cases, ms))


if __name__ == "__main__":
    main()
