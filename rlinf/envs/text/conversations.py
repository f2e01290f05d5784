"""Conversations for supervised fine-tuning: reading them from files and rendering them into token rows
with a loss mask on assistant tokens only. Pure Python (no torch): the SFT workflow turns the rendered
`Trajectory` records into tensors with `rlinf.workflows.multiturn.build_multiturn_rows`, the layout the
actor reads.

Rows (`data.task: conversations`): a local jsonl / parquet / arrow file read by `rlinf.envs.text.files`;
column `data.messages_key` holds a list of messages `{"role": ..., "content": ...}`, roles in `ROLES`,
content a string. A row must have at least one assistant message and at least one non-assistant message
before the first assistant message (the first loss token is predicted from a real token). Anything else
is an `InputError` naming the file, the row (1-based) and the column.

Rendering (`render_conversation`), into a `Trajectory`: `prompt_ids`, then segments in order, model
segments (loss) for assistant tokens, env segments (no loss) for everything else. Messages after the last
assistant message are dropped (they would carry no loss).

- Tokenizer without a chat template (`chat_template is None`, rlinf's CharTokenizer): exactly the layout
  of the multi-turn agent rollout (`rlinf.envs.agent.episodes.run_episodes` with its default render):
  prompt = the contents of the leading non-assistant messages joined by "\\n\\n" (`encode`, no special
  tokens); then every later message's content encoded and appended raw in order (assistant: loss;
  user / tool / system: no loss); then EOS after the last assistant message, with loss.
- Tokenizer with a chat template: `apply_chat_template` over message prefixes. The prompt is the render
  of the leading non-assistant messages with the generation prompt (the assistant header). For each
  later message i: an assistant message's tokens are render(messages[:i+1]) minus
  render(messages[:i], add_generation_prompt=True) (its content and the template's end-of-turn tokens;
  the header gets no loss), preceded by an env segment of the header; any other message's tokens are
  render(messages[:i+1]) minus render(messages[:i]). Each render must extend the previous one (the
  prefix property); a template that rewrites earlier turns (e.g. drops past reasoning) breaks it, and
  such a row is refused with an error naming it.

`max_length`: a rendering longer than that keeps its first `max_length` tokens (prompt first); the
trajectory's `info["truncated"]` says so. A row whose prompt alone reaches `max_length` has no loss
token left and is refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from rlinf.config.schema import DataConfig
from rlinf.envs.agent.trajectory import Segment, Trajectory
from rlinf.envs.text.files import read_table
from rlinf.errors import InputError
from rlinf.models.tokenizer import chat_ids

ROLES = ("system", "user", "assistant", "tool")

Messages = List[Dict[str, str]]


@dataclass
class Conversation:
    """One row of a conversations file: its messages and `meta` (the 1-based file row)."""

    messages: Messages
    meta: dict = field(default_factory=dict)


def check_messages(value, row: int, column: str, path: str) -> Messages:
    """`value` as a list of {role, content} messages (module docstring), else an InputError naming
    `path`, `row` and `column`."""
    where = f"row {row}, column '{column}' (data.messages_key)"
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{where}: expected a non-empty list of messages, got {type(value).__name__}", key=path)
    messages = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: message {j} must be an object with string 'role' and 'content'", key=path)
        if m["role"] not in ROLES:
            raise InputError(f"{where}: message {j} has role '{m['role']}' (expected one of {', '.join(ROLES)})",
                             key=path)
        messages.append({"role": m["role"], "content": m["content"]})
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise InputError(f"{where}: no assistant message (nothing to train on)", key=path)
    if roles[0] == "assistant":
        raise InputError(f"{where}: starts with an assistant message; put a system or user message first",
                         key=path)
    return messages


def read_conversations(path: str, cfg: DataConfig, key: str) -> List[Conversation]:
    """The `Conversation`s of a file (column `cfg.messages_key`), every row checked."""
    table = read_table(path, key)
    column = cfg.messages_key
    if column not in table:
        raise InputError(f"no column '{column}' (data.messages_key); the file has columns {sorted(table)}", key=path)
    return [Conversation(check_messages(v, i, column, path), {"row": i}) for i, v in enumerate(table[column], 1)]


def _leading(messages: Messages) -> int:
    """Index of the first assistant message (= number of leading non-assistant messages)."""
    return next(i for i, m in enumerate(messages) if m["role"] == "assistant")


def _last_assistant(messages: Messages) -> int:
    return max(i for i, m in enumerate(messages) if m["role"] == "assistant")


def _plain_segments(tok, messages: Messages) -> Trajectory:
    """The chat-template-free layout (module docstring): the agent rollout's token for token."""
    first, last = _leading(messages), _last_assistant(messages)
    prompt = list(tok.encode("\n\n".join(m["content"] for m in messages[:first])))
    segments = []
    for m in messages[first:last + 1]:
        ids = list(tok.encode(m["content"]))
        segments.append(Segment.model(ids, [0.0] * len(ids)) if m["role"] == "assistant" else Segment.env(ids))
    segments.append(Segment.model([int(tok.eos_token_id)], [0.0]))
    return Trajectory(prompt, segments)


def _render(tok, messages: Messages, generation_prompt: bool = False) -> List[int]:
    """Token ids of `messages` through the tokenizer's chat template ([] for no messages); a template that
    refuses them (e.g. no 'tool' role) is a ValueError."""
    from jinja2 import TemplateError

    if not messages:
        return []
    try:
        return chat_ids(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                                return_dict=False))
    except TemplateError as e:
        raise ValueError(f"the chat template refuses the conversation: {e}") from None


def _extension(before: List[int], after: List[int], what: str) -> List[int]:
    """`after` minus its prefix `before`; ValueError when `before` is not a prefix of `after`."""
    if after[:len(before)] != before:
        raise ValueError(f"the chat template does not render {what} as an extension of the conversation before "
                         "it (it rewrites earlier turns), so its assistant tokens cannot be found")
    return after[len(before):]


def _template_segments(tok, messages: Messages) -> Trajectory:
    """The chat-template layout (module docstring), prefix property asserted at every message."""
    first, last = _leading(messages), _last_assistant(messages)
    done = _render(tok, messages[:first], generation_prompt=True)
    traj = Trajectory(list(done), [])
    done = _render(tok, messages[:first])  # the assistant header below is appended as an env segment
    for i in range(first, last + 1):
        what = f"message {i} ({messages[i]['role']})"
        if messages[i]["role"] == "assistant":
            header = _render(tok, messages[:i], generation_prompt=True)
            full = _render(tok, messages[:i + 1])
            head, body = _extension(done, header, what), _extension(header, full, what)
            if i > first and head:
                traj.segments.append(Segment.env(head))
            traj.segments.append(Segment.model(body, [0.0] * len(body)))
        else:
            full = _render(tok, messages[:i + 1])
            traj.segments.append(Segment.env(_extension(done, full, what)))
        done = full
    return traj


def _truncate(traj: Trajectory, max_length: int) -> Trajectory:
    """Keep the first `max_length` tokens (prompt first); `info["truncated"]` says whether any were cut."""
    room = max_length - len(traj.prompt_ids)
    segments = []
    for seg in traj.segments:
        if room <= 0:
            break
        ids = seg.token_ids[:room]
        segments.append(Segment.model(ids, [0.0] * len(ids)) if seg.is_model else Segment.env(ids))
        room -= len(ids)
    kept = sum(len(s.token_ids) for s in segments)
    return Trajectory(traj.prompt_ids, segments,
                      info={"truncated": kept < len(traj.response_ids) or len(traj.prompt_ids) > max_length})


def render_conversation(tok, messages: Messages, max_length: int) -> Trajectory:
    """Prompt ids and loss / no-loss segments of one conversation (module docstring); ValueError when it
    cannot be rendered (a template without the prefix property, text outside a char tokenizer's alphabet,
    no loss token within `max_length`)."""
    if getattr(tok, "chat_template", None):
        traj = _template_segments(tok, messages)
    else:
        traj = _plain_segments(tok, messages)
    traj = _truncate(traj, max_length)
    if traj.num_model_tokens == 0:
        raise ValueError(f"no assistant token within data.max_length={max_length} tokens "
                         f"(the prompt has {len(traj.prompt_ids)})")
    return traj


def render_conversations(tok, rows: Sequence[Conversation], max_length: int, key: str) -> List[Trajectory]:
    """`render_conversation` of every row; a row that cannot be rendered is an InputError naming its row
    and `key` (the config key of its file)."""
    out = []
    for i, conv in enumerate(rows):
        try:
            out.append(render_conversation(tok, conv.messages, max_length))
        except ValueError as e:
            raise InputError(f"row {conv.meta.get('row', i + 1)}: {e}", key=key) from None
    return out


def write_conversations(make_rows: Callable[[], List[Dict]], out: str) -> int:
    """CLI helper of the demo writers (`python -m rlinf.envs.text.calc demos`, `... facts demos`): the rows
    `make_rows()` returns as jsonl at `out`, exit code 0; bad input: one error line on stderr (the command's
    output to its user, as `rlinf.run` writes it, not a log record), nothing written, 2."""
    try:
        rows = make_rows()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0
