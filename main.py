"""Entry point: compose the Hydra config and run it. `python main.py task=cifar10 optim=aggmo`."""

import sys
import warnings
from pathlib import Path

# the optbench next to this file, even when another checkout is the one pip installed in editable mode
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

# configs/hydra/launcher/joblib.yaml deliberately shares its name with the plugin's schema, which validates it;
# Hydra 1.3 warns about that pattern on every start.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name.*")


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from optbench.train import run

    run(cfg)


if __name__ == "__main__":
    main()
