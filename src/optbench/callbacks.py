"""Hydra callbacks (configs/config.yaml ``hydra.callbacks``); light to import, since Hydra builds them on every
start."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback


class SweepSummary(Callback):
    """Print the summary table of the sweep's results_dir when a multirun ends (optbench.summary)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            from optbench.summary import table

            print("\n" + table(str(config.results_dir)), flush=True)
        except Exception as err:  # a summary must never turn a finished sweep into a failure
            print(f"optbench: no sweep summary ({type(err).__name__}: {err})", file=sys.stderr)
