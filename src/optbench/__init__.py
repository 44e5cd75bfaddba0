"""optbench: reproduce deep-learning optimizer papers from configuration."""

__version__ = "0.1.0"
