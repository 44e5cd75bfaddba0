"""AggMo's convergence-rate analysis on a quadratic: the iteration matrix against known closed forms."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from optbench.plot.rates import best_rate, spectral_radius


def test_without_momentum_the_rate_is_gradient_descents():
    lams = np.array([1.0, 0.1])
    np.testing.assert_allclose(spectral_radius((0.0,), 0.5, lams), [0.5, 0.95])
    kappa = 100.0  # the best step 2 / (1 + 1/kappa) gives (kappa - 1) / (kappa + 1)
    assert best_rate((0.0,), kappa, lrs=np.array([2.0 / (1.0 + 1.0 / kappa)]))[0] == pytest.approx(99 / 101)


def test_heavy_ball_cannot_beat_the_square_root_of_its_momentum():
    """Polyak: with beta above the optimal damping, the best rate is sqrt(beta), whatever the lr."""
    rho, _ = best_rate((0.9,), 10.0)
    assert rho == pytest.approx(math.sqrt(0.9), rel=1e-6)
    assert best_rate((0.99,), 1000.0)[0] == pytest.approx(math.sqrt(0.99), rel=1e-6)


def test_aggmo_with_one_velocity_is_classical_momentum_and_checks_against_iterating():
    lams = np.geomspace(1e-3, 1.0, 7)
    np.testing.assert_allclose(spectral_radius((0.9,), 0.3, lams), spectral_radius([0.9], 0.3, lams))
    betas, lr, lam = (0.0, 0.9, 0.99), 1.0, 0.01  # the matrix's rho is the decay of the actual iteration
    x, v = 1.0, np.zeros(3)
    for _ in range(3000):
        v = np.array(betas) * v - lam * x
        x = x + lr / 3 * v.sum()
    rho = spectral_radius(betas, lr, np.array([lam]))[0]
    assert abs(x) ** (1 / 3000) == pytest.approx(rho, rel=1e-2)


def test_the_rates_figure_draws_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "optbench.plot", "figure=aggmo_rates", f"plots_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "aggmo" / "rates.png").stat().st_size > 5000
