"""Entry point: compose the Hydra config and run it. `python main.py task=cifar10 optim=aggmo`."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from optbench.train import run

    run(cfg)


if __name__ == "__main__":
    main()
