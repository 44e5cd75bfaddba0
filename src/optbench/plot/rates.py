"""Convergence rates on a quadratic, computed, not trained: AggMo's analysis of passive damping.

On f = lambda x^2 / 2, AggMo's step (v_i = beta_i v_i - lambda x; x += lr / K sum_i v_i; classical momentum is
K = 1) is linear in (v_1 .. v_K, x), so the iterates shrink by the spectral radius rho of its (K+1) x (K+1)
matrix per step. Over a spectrum lambda in [1/kappa, 1] the rate is the largest rho; each method is shown at its
best learning rate from a log grid, so what differs is the damping: ``python -m optbench.plot figure=aggmo_rates``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

METHODS = {"CM beta=0.9": (0.9,), "CM beta=0.99": (0.99,), "CM beta=0.999": (0.999,),
           "AggMo [0, 0.9, 0.99]": (0.0, 0.9, 0.99), "AggMo [0, 0.9, 0.99, 0.999]": (0.0, 0.9, 0.99, 0.999)}
LRS = np.geomspace(1e-3, 10.0, 121)


def spectral_radius(betas: Sequence[float], lr: float, lams: np.ndarray) -> np.ndarray:
    """rho of the iteration matrix for every curvature in ``lams``."""
    k, b = len(betas), np.asarray(betas, dtype=float)
    m = np.zeros((len(lams), k + 1, k + 1))
    m[:, np.arange(k), np.arange(k)] = b  # v_i' = beta_i v_i - lambda x
    m[:, :k, k] = -lams[:, None]
    m[:, k, :k] = lr / k * b  # x' = x + lr / K sum_i v_i'
    m[:, k, k] = 1.0 - lr * lams
    return np.abs(np.linalg.eigvals(m)).max(axis=1)


def best_rate(betas: Sequence[float], kappa: float, lrs: np.ndarray = LRS, points: int = 200) -> tuple[float, float]:
    """(the smallest worst-case rho over the learning rates, that lr) on the spectrum [1/kappa, 1]."""
    lams = np.geomspace(1.0 / kappa, 1.0, points)
    worst = np.array([spectral_radius(betas, lr, lams).max() for lr in lrs])
    i = int(worst.argmin())
    return float(worst[i]), float(lrs[i])


def rates_frame(kappas: Sequence[float], methods: Mapping[str, Sequence[float]] = METHODS) -> pd.DataFrame:
    rows = [{"method": name, "kappa": kappa, **dict(zip(("rho", "lr"), best_rate(betas, kappa)))}
            for name, betas in methods.items() for kappa in kappas]
    return pd.DataFrame(rows).assign(steps_per_e=lambda f: -1.0 / np.log(f["rho"]))


def rates_figure(out: Path) -> list[Path]:
    from optbench.plot.curves import PALETTE, plt, save_figure

    frame = rates_frame(np.geomspace(10, 1e5, 13))
    damping = pd.DataFrame([{"beta": b, "steps_per_e": -1.0 / np.log(best_rate((b,), 1e3)[0])}
                            for b in np.linspace(0.0, 0.999, 40)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, rows) in enumerate(frame.groupby("method", sort=False)):
        style = "-" if name.startswith("AggMo") else "--"
        left.plot(rows["kappa"], rows["steps_per_e"], style, color=PALETTE[i], marker="o", markersize=3, label=name)
        if name.startswith("AggMo"):
            right.axhline(rows.loc[rows["kappa"] == 1e3, "steps_per_e"].iloc[0], color=PALETTE[i], label=name)
    left.set(xscale="log", yscale="log", xlabel="condition number kappa",
             ylabel="steps per e-fold (each at its best lr)", title="rate against conditioning")
    right.plot(damping["beta"], damping["steps_per_e"], color="0.3", label="CM, best lr per beta")
    right.set(yscale="log", xlabel="CM damping beta", ylabel="steps per e-fold", title="kappa = 1000")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.legend(*left.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
               frameon=False)
    fig.tight_layout()
    return save_figure(fig, out)
