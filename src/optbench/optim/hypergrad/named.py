"""The paper's named optimizers with the reference signatures, as thin mappings onto Hypergrad."""

from __future__ import annotations

from optbench.optim.hypergrad.optimizer import Hypergrad


class SGDHD(Hypergrad):
    """SGD-HD / SGDN-HD (Baydin et al. 2018) with torch.optim.SGD's signature plus hypergrad_lr (beta).

    momentum = 0: SGD-HD (d = g); nesterov: SGDN-HD; momentum > 0 without nesterov: classical momentum
    (d = buf). With hypergrad_lr = 0 it is torch.optim.SGD.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, hypergrad_lr: float = 1e-6,
                 lr_min: float | None = None, foreach: bool | None = None):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0 (as torch.optim.SGD), got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        model_opt = "sgdn" if nesterov else "sgdm" if momentum > 0 else "sgd"
        super().__init__(params, lr=lr, hypergrad_lr=hypergrad_lr, model_opt=model_opt, lr_opt="sgd",
                         momentum=momentum, dampening=dampening, weight_decay=weight_decay, lr_min=lr_min,
                         foreach=foreach)


class AdamHD(Hypergrad):
    """Adam-HD (Baydin et al. 2018) with the reference signature. The paper's math: one alpha update per step
    from the dot product over all parameters; per_tensor=True reproduces the reference code's per-tensor
    alpha updates instead (a compatibility mode)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, hypergrad_lr: float = 1e-8, lr_min: float | None = None,
                 per_tensor: bool = False, foreach: bool | None = None):
        super().__init__(params, lr=lr, hypergrad_lr=hypergrad_lr, model_opt="adam", lr_opt="sgd", betas=betas,
                         eps=eps, weight_decay=weight_decay, lr_min=lr_min, per_tensor=per_tensor,
                         foreach=foreach)
