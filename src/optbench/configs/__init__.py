"""The packaged configs (Hydra reads them as the package optbench.configs)."""
