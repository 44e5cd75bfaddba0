"""The command line: ``python main.py task=cifar10 optim=aggmo`` (or ``optbench ...`` once installed).

Hydra composes configs/config.yaml with the chosen task, optimizer and overrides; the configs ship inside the
package, so an installed optbench runs without a checkout. Errors a user can act on (optbench.errors) are one
line on stderr and an exit code (see optbench.errors); ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
"""

import os
import sys
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf

# configs/hydra/launcher/joblib.yaml deliberately shares its name with the plugin's schema, which validates it;
# Hydra 1.3 warns about that pattern on every start.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name.*")




def _choices(group: str) -> str:
    """The configs of a group, for the help text (figure/ and table/ hold plotter specs, not run choices)."""
    from optbench.run_config import config_choices

    return ", ".join(config_choices(group))


if not OmegaConf.has_resolver("optbench_choices"):
    OmegaConf.register_new_resolver("optbench_choices", _choices)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run; with a tune config, returns its validation score (the objective of an optimising sweeper such
    as Optuna: tune.metric, judged by tune.select)."""
    from optbench.errors import OptbenchError, RunInterrupted
    from optbench.train import run

    try:
        run_dir = run(cfg)
        tune = cfg.get("tune")
        if tune is not None and run_dir is not None:
            from optbench.selection import objective

            return objective(run_dir, str(tune.get("metric", "loss")), str(tune.get("select", "best")))
        return None
    except (OptbenchError, KeyboardInterrupt) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(err, KeyboardInterrupt):
            print("optbench: interrupted; the run resumes from its last checkpoint", file=sys.stderr)
            sys.exit(130)
        prefix = "optbench: " if isinstance(err, RunInterrupted) else "optbench: error: "
        print(prefix + str(err), file=sys.stderr, flush=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
