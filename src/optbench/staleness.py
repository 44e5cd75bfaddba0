"""Simulated asynchronous training: apply at each update the gradient computed tau iterations earlier.

This is the round-robin model of tau + 1 workers that YellowFin's asynchronous experiments use (16 workers:
tau = 15): every worker reads the model, computes a gradient, and its update lands after the other tau
workers' updates, so update k applies the gradient computed at the iterate x_{k - tau}.

The trainer calls ``push()`` once per iteration, between ``backward()`` and ``optimizer.step()``::

    delay = DelayedGradients(model.parameters(), tau)
    for batch in batches:
        loss(batch).backward()
        if delay.push():          # False while the pipeline fills
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

The first tau iterations only fill the pipeline (all tau + 1 workers start from x_0, as in the model), so a run
of N iterations makes N - tau updates; update k (0-based) applies the gradient of iteration k, computed at
x_{max(0, k - tau)}. tau = 0 is ordinary training (push() returns True and touches nothing).

Memory: the queue holds the gradient tensors themselves, handed over from ``.grad`` without copying: at most
tau gradients per parameter are kept between iterations, and ``.grad`` is given the stale tensor.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

import torch


class DelayedGradients:
    def __init__(self, params: Iterable[torch.Tensor], tau: int):
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
            raise ValueError(f"tau (trainer.staleness) must be an integer >= 0, got {tau!r}")
        self.params = list(params)
        self.tau = tau
        self._queue: deque[list[torch.Tensor | None]] = deque()
        self._fresh: dict[int, torch.Tensor] = {}

    def push(self) -> bool:
        """Take the gradients just computed; if an update is due, put the oldest queued ones into ``.grad``.

        Returns whether an update is due (False during the first tau iterations). When it is not, ``.grad`` is
        set to None, so an optimizer stepped anyway does nothing.
        """
        if self.tau == 0:
            self._fresh = {id(p): p.grad for p in self.params if p.grad is not None}
            return True
        fresh = [p.grad for p in self.params]
        self._fresh = {id(p): g for p, g in zip(self.params, fresh) if g is not None}
        self._queue.append(fresh)
        due = len(self._queue) > self.tau
        stale = self._queue.popleft() if due else [None] * len(self.params)
        for p, g in zip(self.params, stale):
            p.grad = g
        return due

    def fresh_grad(self, param: torch.Tensor) -> torch.Tensor | None:
        """The gradient computed at the current iterate in the last ``push()`` (what a synchronous step would
        apply); closed-loop YellowFin measures the total momentum against it. Do not modify it: it is queued."""
        return self._fresh.get(id(param))

    def __len__(self) -> int:
        """Gradients waiting in the pipeline."""
        return len(self._queue)

    def state_dict(self) -> dict[str, Any]:
        """The queue (lists of tensors or None, oldest first), for an exact resume."""
        return {"tau": self.tau, "queue": [list(entry) for entry in self._queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["tau"]) != self.tau:
            raise ValueError(f"checkpoint was written with staleness {state['tau']}, this run uses {self.tau}")
        queue = state["queue"]
        if any(len(entry) != len(self.params) for entry in queue):
            raise ValueError("checkpoint's gradient queue does not match the model's parameters")
        self._queue = deque(
            [None if g is None else g.to(device=p.device, dtype=p.dtype) for p, g in zip(self.params, entry)]
            for entry in queue
        )
        self._fresh = {}
