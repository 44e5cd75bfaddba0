"""The command line: ``python main.py task=cifar10 optim=aggmo`` (or ``optbench ...`` once installed).

Hydra composes configs/config.yaml with the chosen task, optimizer and overrides; the configs ship inside the
package, so an installed optbench runs without a checkout.
"""

import warnings

import hydra
from omegaconf import DictConfig

# configs/hydra/launcher/joblib.yaml deliberately shares its name with the plugin's schema, which validates it;
# Hydra 1.3 warns about that pattern on every start.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name.*")


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from optbench.train import run

    run(cfg)


if __name__ == "__main__":
    main()
