"""One error type for missing or unreadable datasets, so every reader tells the user the same things:
the exact path it looked for, and how to get the files."""


class DatasetNotFoundError(FileNotFoundError):
    def __init__(self, dataset: str, path, how_to_get: str):
        super().__init__(f"{dataset} not found: expected {path}. {how_to_get}")
        self.dataset = dataset
        self.path = path
