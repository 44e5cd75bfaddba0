"""CUDA checks (issue 18), marked ``cuda`` and skipped without a GPU: `pytest -m cuda tests/test_cuda.py` (run by
scripts/gpu_check.sh). Every optimizer's multi-tensor path on CUDA equals its per-tensor path on the CPU; step()
never synchronises the host with the GPU; AMP (bf16, fp16 with the gradient scaler), channels_last and
torch.compile train on CUDA; a one-process NCCL torchrun run equals the plain run; a resumed CUDA run equals the
uninterrupted one. Each test is a few seconds on one GPU (the set well under 3 minutes on an H200)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO, compose
from test_optim_common import CASES, loss_of, make_net
from test_optim_yellowfin import HostSyncCounter
from test_scale_out import ENV, assert_same_run, main_py
from test_trainer_options import TINY_MLP, assert_compiled_trains_like_eager, final, read_csv

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MLP = [arg for arg in TINY_MLP if arg != "device=cpu"]
CUDA_MLP = [*MLP, "device=cuda"]


@contextlib.contextmanager
def no_tf32():
    """cuDNN's convolutions in true float32 (PyTorch runs them in TF32 by default), through the setting every
    torch >= 2.4 has."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def groups(params: list, extra: dict) -> list[dict]:
    """Two parameter groups as tests/test_optim_common.py's two_groups makes them."""
    return [{"params": params[2:]}, {"params": params[:2], **extra}]


def trajectory(case, device: str, foreach: bool | None, steps: int = 20) -> torch.Tensor:
    """The parameters after ``steps`` float32 steps on ``device``. The gradients come from the same float32 CPU
    network for either device (its weights copied from the parameters before each step), so only the
    optimizer's arithmetic differs between the devices."""
    net = make_net(torch.float32)
    params = [nn.Parameter(p.detach().clone().to(device)) for p in net.parameters()]
    opt = case.build(groups(params, case.group), **({"foreach": foreach} if case.foreach else {}))
    for step in range(steps):
        with torch.no_grad():
            for q, p in zip(net.parameters(), params):
                q.copy_(p)
        net.zero_grad()
        loss_of(net, step).backward()
        for p, q in zip(params, net.parameters()):
            p.grad = q.grad.to(device)
        opt.step()
    return torch.cat([p.detach().cpu().flatten() for p in params])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_multi_tensor_path_on_cuda_equals_per_tensor_path_on_cpu(case):
    on_cuda = trajectory(case, "cuda", True)  # a single-path optimizer runs its one path on both
    on_cpu = trajectory(case, "cpu", False)
    assert torch.isfinite(on_cuda).all()
    torch.testing.assert_close(on_cuda, on_cpu, rtol=1e-5, atol=1e-5)


def stepper(case):
    """A CUDA network, its optimizer on the default path (multi-tensor on a GPU) and step(k), which sets
    precomputed gradients and steps: nothing in it but the optimizer reads or waits for the device."""
    net = make_net(torch.float32, "cuda")
    params = list(net.parameters())
    opt = case.build(groups(params, case.group))
    gen = torch.Generator(device="cuda").manual_seed(0)
    grads = [[0.1 * torch.randn(p.shape, device="cuda", generator=gen) for p in params] for _ in range(3)]

    def step(k: int) -> None:
        for p, g in zip(params, grads[k % 3]):
            p.grad = g.clone()
        opt.step()

    for k in range(3):  # state allocation and first calls
        step(k)
    torch.cuda.synchronize()
    return step


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step_never_reads_a_device_value_on_the_host(case):
    step = stepper(case)
    with HostSyncCounter() as counter:
        for k in range(3, 6):
            step(k)
    assert counter.syncs == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step_never_synchronises_the_cuda_stream(case):
    """CUDA's own detector: any synchronising call (a device read, a blocking copy, a stream sync) raises."""
    step = stepper(case)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(3, 6):
            step(k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ the trainer
@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    from optbench.train import run

    return run(compose(*CUDA_MLP, "optim=adam", "optim.lr=0.01", "task.epochs=3",
                       f"results_dir={tmp_path_factory.mktemp('fp32')}"))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda(amp, fp32_run, tmp_path):
    from optbench import rundir
    from optbench.train import run

    mixed = run(compose(*CUDA_MLP, "optim=adam", "optim.lr=0.01", "task.epochs=3", f"trainer.amp={amp}",
                        f"results_dir={tmp_path}"))
    rows = read_csv(mixed / rundir.METRICS)
    assert float(rows[-1]["val_loss"]) < 0.5 * float(rows[0]["val_loss"])
    assert final(mixed, "val_loss") == pytest.approx(final(fp32_run, "val_loss"), rel=0.05)
    scaler = torch.load(mixed / rundir.CHECKPOINT, weights_only=True)["scaler"]
    if amp == "fp16":  # the gradient scaler ran (and its state is in the checkpoint)
        assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    else:
        assert scaler == {}


def test_channels_last_trains_like_nchw_on_cuda(tmp_path, mini_cifar_dir):
    from optbench.train import run

    args = ["task=cifar10", "task.model=resnet20", "task.epochs=1", "task.batch_size=16", "optim=momentum",
            f"data_dir={mini_cifar_dir}", "device=cuda"]
    with no_tf32():
        plain = run(compose(*args, f"results_dir={tmp_path / 'nchw'}"))
        nhwc = run(compose(*args, "trainer.channels_last=true", f"results_dir={tmp_path / 'nhwc'}"))
    assert final(nhwc, "val_loss") == pytest.approx(final(plain, "val_loss"), rel=1e-3)


def test_compiled_model_trains_like_the_eager_one_on_cuda(tmp_path):
    assert_compiled_trains_like_eager(tmp_path, CUDA_MLP)


def test_one_process_nccl_torchrun_equals_the_plain_run(tmp_path):
    """torchrun --nproc_per_node=1 joins an NCCL process group and trains through DistributedDataParallel;
    the run equals the plain one, for a per-tensor (momentum) and a projecting (AdamP) optimizer."""
    args = ["-m", "optim=momentum,adamp", "task=digits_mlp", "task.epochs=2", "task.model_kwargs.hidden=[32]",
            "device=cuda"]
    main_py(*args, results=tmp_path / "plain")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
                           str(REPO / "main.py"), *args, f"results_dir={tmp_path / 'ddp'}"], cwd=REPO,
                          env={**ENV, "NCCL_DEBUG": "WARN"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(1 process)" in proc.stdout  # the data-parallel path ran
    for optim in ("momentum", "adamp"):
        plain = next((tmp_path / "plain" / "digits_mlp" / optim).glob("*/seed0"))
        assert_same_run(plain, tmp_path / "ddp" / plain.relative_to(tmp_path / "plain"))


RESUMED = {"adamp": ["optim=adamp"], "yellowfin-fp16": ["optim=yellowfin", "trainer.amp=fp16"],
           "lstm-dropout": ["task=ptb_lstm", "task.model_kwargs.embed_dim=16", "task.model_kwargs.hidden=16",
                            "task.model_kwargs.layers=1", "optim=sgd"]}


@pytest.mark.parametrize("which", RESUMED)
def test_resumed_cuda_run_equals_the_uninterrupted_one(which, tmp_path, mini_text_dir):
    """Resume from the epoch-2 checkpoint of a finished 3-epoch CUDA run (optimizer state, the CUDA generators
    (dropout's too) and, with fp16, the scaler come back): the third epoch is the same. (One LSTM layer: the
    dropout between stacked LSTM layers is cuDNN's, whose state no checkpoint holds.)"""
    from optbench import rundir
    from optbench.train import run

    task = [] if which.startswith("lstm") else MLP
    args = [*task, *RESUMED[which], "device=cuda", f"data_dir={mini_text_dir}", "task.epochs=3", "trainer.keep=all"]
    whole = run(compose(*args, f"results_dir={tmp_path / 'whole'}"))
    copy = tmp_path / "copy" / whole.relative_to(tmp_path / "whole")
    shutil.copytree(whole, copy)
    (copy / rundir.PREVIOUS_CHECKPOINT).replace(copy / rundir.CHECKPOINT)
    (copy / rundir.SUMMARY).unlink()
    assert run(compose(*args, f"results_dir={tmp_path / 'copy'}")) == copy
    rows_whole, rows_copy = read_csv(whole / rundir.METRICS), read_csv(copy / rundir.METRICS)
    assert len(rows_copy) == len(rows_whole) == 4
    for a, b in zip(rows_whole, rows_copy):
        for key in a:
            if key != "time_s" and a[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6, abs=1e-7), (a["epoch"], key)
    final_whole = torch.load(whole / rundir.CHECKPOINT, weights_only=True)["model"]
    final_copy = torch.load(copy / rundir.CHECKPOINT, weights_only=True)["model"]
    for name in final_whole:
        torch.testing.assert_close(final_copy[name], final_whole[name], rtol=1e-6, atol=1e-7)
