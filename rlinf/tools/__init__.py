"""Tools for agentic RL: what an env worker calls when the model asks for a tool.

    from rlinf.tools import call
    result = call("calculator", "12*(3+4)")          # ToolResult(ok=True, output="84", ...)
    result = call("python", "print(2**10)", limits={"wall_s": 5})
    result = call("retrieve", "capital of France", corpus="docs.jsonl", k=3)
    observation = result.observation()                # what the model reads next

`call` never raises for a tool's failure (bad input, a limit hit, a time-out): it returns
ok=False with an error string. Tools live in the `TOOLS` registry; add one with
`@TOOLS.register("name")` on a function `fn(text: str, **options) -> ToolResult`.
`python -m rlinf.tools run <tool> --input FILE` runs one call from the command line (docs/tools.md).
"""

from .base import TOOLS, ToolError, ToolResult, call
from . import calculator, retrieve, sandbox  # noqa: F401  (register the built-in tools)
from .sandbox import SandboxLimits, isolation

__all__ = ["TOOLS", "ToolError", "ToolResult", "call", "SandboxLimits", "isolation"]
