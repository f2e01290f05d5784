"""`calc`: multi-digit multiplication for tool-using agents ("37*58=", answer "2146"), and format
demonstrations for the SFT warm-start.

Operands range over [data.min_operand, data.max_operand]; the eval split holds out whole operand pairs
(a deterministic ~1/5 of them), as `arith` does. A tiny model cannot multiply two-digit numbers in its
head; it can learn to copy the expression into a calculator call and the result into its answer:

    37*58=<tool_call>{"name": "calculator", "input": "37*58"}</tool_call>
    <tool_result>2146</tool_result>
    <answer>2146</answer>

`format_demos` writes such episodes as conversations (`messages`: user, assistant, tool, assistant) for
`runner.workflow=sft`. `warm_start_demos`, the recipe's set, is a few worked calls on operand pairs
outside the task's held-out split: a model fine-tuned on 32 of them knows the call format but copies
operands and results unreliably (about 10% held-out accuracy); RL has to make the copying reliable.

    python -m rlinf.envs.text.calc demos --out demos.jsonl [--num 40] [--seed 0] [--data-seed 1234]
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Dict, List, Tuple

from rlinf.config.schema import DataConfig
from rlinf.envs.agent.tool_env import ToolEnv
from rlinf.envs.text.conversations import write_conversations
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


def format_demos(pairs: List[Tuple[int, int]], op: str = "*") -> List[Dict]:
    """One scripted calculator episode "a<op>b=" per operand pair, as conversation rows {"messages": [...]}."""
    if op not in OPERATIONS:
        raise InputError(f"unknown operation {op!r}; choose one of {sorted(OPERATIONS)}", key="op")
    rows = []
    for a, b in pairs:
        sample = _sample(a, b, op)
        env = ToolEnv(verifier=lambda response, answer: float(response == answer), tools=("calculator",),
                      system_prompt=None)
        messages = [dict(m) for m in env.reset(sample)]
        call = tool_call_text(sample.prompt.rstrip("="))
        observation, _, done, info = env.step(call)
        if done or not info["tool_ok"]:
            raise RuntimeError(f"demo {sample.prompt!r}: the calculator call failed ({info})")
        final = answer_text(sample.answer)
        _, reward, done, _ = env.step(final)
        if not (done and reward == 1.0):
            raise RuntimeError(f"demo {sample.prompt!r}: the scripted answer was not graded correct")
        messages += [{"role": "assistant", "content": call}, {"role": "tool", "content": observation},
                     {"role": "assistant", "content": final}]
        rows.append({"messages": messages})
    return rows


def warm_start_demos(num: int, seed: int, data: DataConfig) -> List[Dict]:
    """`num` multiplication demos on distinct operand pairs of [data.min_operand, data.max_operand] that are
    not in `data`'s held-out split (so held-out accuracy stays a measure of generalisation)."""
    held = {(s.meta["a"], s.meta["b"]) for s in load_calc(data).eval}
    lo, hi = data.min_operand, data.max_operand
    pool = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if (a, b) not in held]
    if num > len(pool):
        raise InputError(f"{num} demos from {len(pool)} operand pairs", key="--num")
    return format_demos(random.Random(seed).sample(pool, num), "*")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlinf.envs.text.calc")
    sub = parser.add_subparsers(dest="command", required=True)
    demos = sub.add_parser("demos", help="write calculator demonstrations (jsonl conversations)")
    demos.add_argument("--out", required=True)
    demos.add_argument("--num", type=int, default=40)
    demos.add_argument("--seed", type=int, default=0)
    demos.add_argument("--min-operand", type=int, default=10)
    demos.add_argument("--max-operand", type=int, default=99)
    demos.add_argument("--data-seed", type=int, default=DataConfig.seed, help="data.seed of the RL run (its split)")
    args = parser.parse_args(argv)
    data = DataConfig(task="calc", min_operand=args.min_operand, max_operand=args.max_operand, seed=args.data_seed)

    def rows() -> List[Dict]:
        if args.num < 1:
            raise InputError("at least one demo", key="--num")
        return warm_start_demos(args.num, args.seed, data)

    return write_conversations(rows, args.out)


if __name__ == "__main__":
    sys.exit(main())
