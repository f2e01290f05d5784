"""Error types shared by every part of rlinf.

`InputError` is the one family the command line turns into a one-line message and exit code 2:
bad config keys or values, impossible placements, missing files. Everything else is a bug or a
runtime failure and keeps its traceback.
"""


class InputError(Exception):
    """Bad user input. `key` names the config path or file at fault when there is one."""

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class ConfigError(InputError):
    """The configuration (YAML, overrides, values) is invalid."""


class PlacementError(InputError):
    """`cluster.component_placement` cannot be realised on the cluster."""
