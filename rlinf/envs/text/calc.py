"""`calc`: multi-digit multiplication for tool-using agents ("37*58=", answer "2146"), and format
demonstrations for the SFT warm-start.

Operands range over [data.min_operand, data.max_operand]; the eval split holds out whole operand pairs
(a deterministic ~1/5 of them), as `arith` does. A tiny model cannot multiply two-digit numbers in its
head; it can learn to copy the expression into a calculator call and the result into its answer:

    37*58=<tool_call>{"name": "calculator", "input": "37*58"}</tool_call>
    <tool_result>2146</tool_result>
    <answer>2146</answer>

`format_demos` writes such episodes on *another* operation (addition by default) as conversations
(`messages`: user, assistant, tool, assistant) for `runner.workflow=sft`: they teach the call format,
not the task's solutions. The tool message is the observation text `ToolEnv` itself returns, so a
warm-started policy sees in RL exactly the token layout it was fine-tuned on.

    python -m rlinf.envs.text.calc demos --out demos.jsonl [--num 64] [--op +] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Dict, List

from rlinf.config.schema import DataConfig
from rlinf.envs.agent.tool_env import ToolEnv
from rlinf.envs.text.tasks import TaskSplit, TextSample
from rlinf.errors import InputError

OPERATIONS = {"*": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}


def tool_call_text(expression: str) -> str:
    """The documented call format (rlinf.envs.agent.tool_env) for the calculator on `expression`."""
    return '<tool_call>{"name": "calculator", "input": "' + expression + '"}</tool_call>'


def answer_text(answer: str) -> str:
    return f"<answer>{answer}</answer>"


def _sample(a: int, b: int, op: str) -> TextSample:
    return TextSample(prompt=f"{a}{op}{b}=", answer=str(OPERATIONS[op](a, b)), meta={"a": a, "b": b, "op": op,
                                                                                  "task": "calc"})


def load_calc(cfg: DataConfig) -> TaskSplit:
    """Train prompts drawn from the non-held-out operand pairs; eval prompts are the held-out pairs."""
    lo, hi = cfg.min_operand, cfg.max_operand
    if lo > hi:
        raise InputError(f"data.min_operand = {lo} > data.max_operand = {hi}", key="data.min_operand")
    pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    rng = random.Random(cfg.seed)
    rng.shuffle(pairs)
    n_eval = max(1, len(pairs) // 5)
    held, train_pairs = pairs[:n_eval], pairs[n_eval:]
    if not train_pairs:
        raise InputError(f"operands {lo}..{hi} leave no training pairs", key="data.max_operand")
    train = [_sample(*train_pairs[rng.randrange(len(train_pairs))], "*") for _ in range(cfg.train_size)]
    evals = [_sample(*held[i], "*") for i in range(min(cfg.eval_size, len(held)))]
    return TaskSplit(train, evals)


def format_demos(num: int, op: str = "+", seed: int = 0, lo: int = 10, hi: int = 99) -> List[Dict]:
    """`num` scripted calculator episodes on operation `op` as conversation rows {"messages": [...]}."""
    if op not in OPERATIONS:
        raise InputError(f"unknown operation {op!r}; choose one of {sorted(OPERATIONS)}", key="--op")
    rng = random.Random(seed)
    rows = []
    for _ in range(num):
        sample = _sample(rng.randint(lo, hi), rng.randint(lo, hi), op)
        env = ToolEnv(verifier=lambda response, answer: float(response == answer), tools=("calculator",),
                      system_prompt=None)
        messages = [dict(m) for m in env.reset(sample)]
        call = tool_call_text(sample.prompt.rstrip("="))
        observation, _, done, info = env.step(call)
        if done or not info["tool_ok"]:
            raise RuntimeError(f"demo {sample.prompt!r}: the calculator call failed ({info})")
        final = answer_text(sample.answer)
        _, reward, done, _ = env.step(final)
        assert done and reward == 1.0, (sample, observation)
        messages += [{"role": "assistant", "content": call}, {"role": "tool", "content": observation},
                     {"role": "assistant", "content": final}]
        rows.append({"messages": messages})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlinf.envs.text.calc")
    sub = parser.add_subparsers(dest="command", required=True)
    demos = sub.add_parser("demos", help="write calculator-format demonstrations (jsonl conversations)")
    demos.add_argument("--out", required=True)
    demos.add_argument("--num", type=int, default=64)
    demos.add_argument("--op", default="+")
    demos.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rows = format_demos(args.num, args.op, args.seed)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
