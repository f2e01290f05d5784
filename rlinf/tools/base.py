"""The tool API an env worker calls: `call(name, input, **options) -> ToolResult`, never raising for a tool's
own failure (bad input, a limit hit, a time-out): those come back as `ok=False` with an `error` string
the model reads as its observation. Tools are plain functions registered in `TOOLS` by name.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Optional

from rlinf.algorithms.registry import Registry
from rlinf.errors import InputError

logger = logging.getLogger(__name__)

# Upper bound on the input text any tool accepts (the model's tool-call argument).
MAX_INPUT_CHARS = 100_000


@dataclasses.dataclass
class ToolResult:
    """What a tool call returns. `output` is the text shown to the model on success; `error` names the
    failure (and the limit, for a sandbox that was stopped); `elapsed` is wall seconds of the call;
    `meta` carries tool-specific facts (the sandbox's isolation mode, exit code, retrieval scores)."""

    ok: bool
    output: str = ""
    error: Optional[str] = None
    elapsed: float = 0.0
    meta: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def observation(self) -> str:
        """The text a model sees: the output, or `error: ...` (with any output produced before it)."""
        if self.ok:
            return self.output
        return f"{self.output}\nerror: {self.error}" if self.output else f"error: {self.error}"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class ToolError(Exception):
    """A tool's own failure, shown to the model (never a crashed run): `call` turns it into a ToolResult."""

    def __init__(self, message: str, output: str = "", meta: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.output = output
        self.meta = meta or {}


ToolFn = Callable[..., ToolResult]

# name -> fn(text: str, **options) -> ToolResult. Register more with `@TOOLS.register("name")`.
TOOLS: Registry[ToolFn] = Registry("tool", key="env.tools")

# Failures of a tool call that become an observation. A tool raises ToolError for what it expects;
# the others are the standard errors a parser or library raises on odd input. InputError here means a
# misconfigured option (e.g. a missing corpus): reported, and logged, since a user must fix it.
_REPORTED = (ToolError, InputError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError,
             OSError, UnicodeError)


def call(name: str, text: str, **options: Any) -> ToolResult:
    """Run tool `name` on `text` with tool `options`; every tool failure is a ToolResult with ok=False."""
    start = time.monotonic()
    if name not in TOOLS:
        known = ", ".join(TOOLS.names())
        return ToolResult(False, error=f"unknown tool '{name}'; known tools: {known}",
                          elapsed=time.monotonic() - start)
    if not isinstance(text, str):
        return ToolResult(False, error=f"tool input must be text, got {type(text).__name__}",
                          elapsed=time.monotonic() - start)
    if len(text) > MAX_INPUT_CHARS:
        return ToolResult(False, error=f"tool input too long ({len(text)} chars > {MAX_INPUT_CHARS})",
                          elapsed=time.monotonic() - start)
    try:
        result = TOOLS.get(name)(text, **options)
    except _REPORTED as exc:
        if isinstance(exc, InputError):
            logger.warning("tool %s misconfigured: %s", name, exc)
        output = exc.output if isinstance(exc, ToolError) else ""
        meta = exc.meta if isinstance(exc, ToolError) else {}
        message = str(exc) or type(exc).__name__
        result = ToolResult(False, output=output, error=message, meta=meta)
    result.elapsed = time.monotonic() - start
    return result
