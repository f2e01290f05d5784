"""Agent environments: multi-turn text / tool episodes where the language model is the policy
(`ToolEnv`), and the episode driver an env worker calls (`rlinf.envs.agent.episodes`)."""

from rlinf.envs.agent.tool_env import STOP_STRINGS, SYSTEM_PROMPT, ParsedTurn, ToolEnv, parse_tool_call, parse_turn

__all__ = ["STOP_STRINGS", "SYSTEM_PROMPT", "ParsedTurn", "ToolEnv", "parse_tool_call", "parse_turn"]
