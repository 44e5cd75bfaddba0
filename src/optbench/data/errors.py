"""Errors for missing or unreadable datasets, so every reader tells the user the same things: the exact path,
what is wrong with it, and how to get the files."""

from __future__ import annotations

import contextlib
import pickle
import zlib
from typing import Iterator

from optbench.errors import OptbenchError


class DatasetNotFoundError(OptbenchError, FileNotFoundError):
    exit_code = 2

    def __init__(self, dataset: str, path, how_to_get: str):
        super().__init__(f"{dataset} not found: expected {path}. {how_to_get}")
        self.dataset = dataset
        self.path = path


class DatasetError(OptbenchError, ValueError):
    """A dataset file is there but cannot be read."""

    exit_code = 2


@contextlib.contextmanager
def reading(path, fix: str = "delete it and fetch it again") -> Iterator[None]:
    """Turn any failure to read ``path`` (a bad gzip stream, a truncated pickle, bad UTF-8...) into a
    DatasetError that names the file, what went wrong, and the fix."""
    try:
        yield
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, zlib.error) as err:
        detail = str(err).splitlines()[0] if str(err) else ""
        raise DatasetError(f"{path} cannot be read ({type(err).__name__}: {detail}); {fix}") from None
