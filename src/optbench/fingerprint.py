"""Which parts of a run's config a resume must keep: everything that changes the math or the meaning of the
logs, i.e. every key except the few that only say where and how fast the run executes (FREE_KEYS).

The run directory keeps the config the run started with (config.yaml) and its fingerprint (summary.json);
resuming with a config whose fingerprinted keys differ is refused, naming them. Free keys may change from one
attempt to the next; summary.json's ``attempts`` records what each attempt changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from optbench.rundir import flatten

# where a run executes, not what it computes
FREE_KEYS = ("device", "data_dir", "results_dir", "resume", "tensorboard", "log_weight_norm", "hydra",
             "trainer.progress", "trainer.threads", "trainer.keep", "trainer.compile", "trainer.channels_last", "task.download",
             "task.eval_batch_size", "task.num_workers")


def _free(key: str) -> bool:
    return any(key == free or key.startswith(free + ".") for free in FREE_KEYS)


def fixed_part(cfg: Mapping) -> dict[str, Any]:
    """The keys a resume must keep, flattened (``optim.lr``, ``trainer.log_every`` ...)."""
    return {k: v for k, v in flatten(cfg).items() if not _free(k)}


def fingerprint(cfg: Mapping) -> str:
    return hashlib.sha256(json.dumps(fixed_part(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(before: Mapping, after: Mapping, fixed: bool) -> dict[str, list]:
    """{key: [before, after]} for the fixed (or the free) keys whose values differ."""
    old, new = flatten(before), flatten(after)
    keys = sorted(k for k in set(old) | set(new) if _free(k) != fixed and old.get(k) != new.get(k))
    return {k: [old.get(k), new.get(k)] for k in keys}
