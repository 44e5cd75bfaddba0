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
            if config.get("tune") is not None:
                self._print_tuned(config)
        except Exception as err:  # a summary must never turn a finished sweep into a failure
            print(f"optbench: no sweep summary ({type(err).__name__}: {err})", file=sys.stderr)

    @staticmethod
    def _print_tuned(config: Any) -> None:
        """After a tuning sweep: the setting chosen per optimizer (optbench.selection)."""
        from optbench import results
        from optbench.selection import select_tuned, tuned_markdown

        metric, select = str(config.tune.get("metric", "loss")), str(config.tune.get("select", "best"))
        chosen = select_tuned(results.load(str(config.results_dir), task=str(config.task.name)), metric, select)
        print("\n" + tuned_markdown(chosen, metric, select), flush=True)
        seeds = int(config.tune.get("confirm_seeds") or 0)
        if seeds:  # tune.confirm_seeds=N: each chosen setting again on seeds 0..N-1
            import subprocess

            from optbench.selection import confirm_commands

            for command in confirm_commands(chosen, str(config.results_dir), seeds):
                print("optbench: confirming: python main.py " + " ".join(command), flush=True)
                subprocess.run([sys.executable, "-m", "optbench.cli", *command, f"device={config.device}"],
                               check=True)
