"""Entry point: compose the Hydra config and run it. `python main.py task=cifar10 optim=aggmo`."""

import sys
from pathlib import Path

# the optbench next to this file, even when another checkout (or a non-editable install) is importable
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from optbench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
