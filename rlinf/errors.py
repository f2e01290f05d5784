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


class RunFailure(Exception):
    """A worker-side failure a run restarts from: a dead or failing rank of any group, a missed
    deadline (a wait that timed out), a broken channel or weight sync. `rlinf.runners.runner.run` stops
    every group and resumes from the newest complete checkpoint while `runner.max_restarts` allows.
    Error types of the runtime that mean this subclass it; nothing else is retried."""


class RLinfTimeoutError(RunFailure, TimeoutError):
    """A bounded wait inside rlinf ran past its deadline. Every wait in rlinf has one, taken from a
    config value (`key` names it). Raised in a worker, it reaches the controller as a `WorkerError`
    naming the group, rank and method; raised in the controller, it is a `RunFailure` the restart
    path handles."""

    def __init__(self, message: str, timeout_s: float | None = None, key: str | None = None):
        self.timeout_s, self.key = timeout_s, key
        super().__init__(f"{message} (bound: {key})" if key else message)


class ReshardTimeoutError(RLinfTimeoutError):
    """A weight-sync message (header, bucket) or a staged switch did not arrive in time."""
