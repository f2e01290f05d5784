"""Readable transcripts of agent episodes: every model turn, tool call and tool result.

    record = episode_record(trajectory, sample, tokenizer)
    write_transcripts(records, out_dir, "eval_step_40")   # -> eval_step_40.jsonl and eval_step_40.md

A record: `prompt`, `answer` (the reference), `task` (sample.meta["task"], else "default"), `reward`
(outcome + per-turn), `correct` (reward >= 1), `turns` / `tool_calls` / `reason` (why the episode
ended), and `messages`: [{"role": "model" | "env", "text": ...}] in order, decoded with the policy
tokenizer (special tokens skipped), so the file shows exactly what the model wrote and read.
"""

import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

from rlinf.envs.agent.trajectory import Trajectory


def episode_record(traj: Trajectory, sample, tokenizer) -> Dict:
    messages = [{"role": "model" if seg.is_model else "env",
                 "text": tokenizer.decode(seg.token_ids, skip_special_tokens=True)} for seg in traj.segments]
    reward = traj.total_reward
    return {"prompt": sample.prompt, "answer": str(sample.answer), "task": sample.meta.get("task", "default"),
            "reward": reward, "correct": reward >= 1.0, "turns": traj.info["turns"],
            "tool_calls": traj.info["tool_calls"], "reason": traj.info.get("reason"), "messages": messages}


def accuracy_by_task(records: List[Dict]) -> Dict[str, Dict[str, float]]:
    """{task: {"num_episodes", "accuracy", "mean_reward", "tool_call_rate", "mean_turns"}}."""
    groups: Dict[str, List[Dict]] = defaultdict(list)
    for r in records:
        groups[r["task"]].append(r)
    return {task: {"num_episodes": len(rs), "accuracy": sum(r["correct"] for r in rs) / len(rs),
                   "mean_reward": sum(r["reward"] for r in rs) / len(rs),
                   "tool_call_rate": sum(r["tool_calls"] > 0 for r in rs) / len(rs),
                   "mean_turns": sum(r["turns"] for r in rs) / len(rs)} for task, rs in sorted(groups.items())}


def _markdown(records: List[Dict], title: str) -> str:
    lines = [f"# {title}", ""]
    for task, stats in accuracy_by_task(records).items():
        lines.append(f"- **{task}**: accuracy {stats['accuracy']:.1%} over {stats['num_episodes']} episodes, "
                     f"tool-call rate {stats['tool_call_rate']:.1%}, {stats['mean_turns']:.2f} turns per episode")
    for i, r in enumerate(records):
        verdict = "correct" if r["correct"] else "wrong"
        lines += ["", f"## Episode {i}: {verdict} (reward {r['reward']:.3g}, {r['turns']} turns, ended by "
                      f"{r['reason']})", "", f"**Prompt**: `{r['prompt']}`  ", f"**Reference answer**: `{r['answer']}`", ""]
        for m in r["messages"]:
            label = "Model" if m["role"] == "model" else "Environment"
            lines += [f"**{label}**:", "", "```text", m["text"].strip("\n"), "```", ""]
    return "\n".join(lines) + "\n"


def write_transcripts(records: List[Dict], out_dir, name: str, title: Optional[str] = None) -> Path:
    """`<out_dir>/<name>.jsonl` (one record per line) and `<name>.md` (headed `title`, default `name`);
    returns the jsonl path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / f"{name}.md").write_text(_markdown(records, title or name))
    return path
