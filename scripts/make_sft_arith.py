"""Writes data/sft_arith.jsonl: SFT demonstrations for configs/sft_tiny.yaml, one conversation per distinct
training operand pair of configs/grpo_arith.yaml's task (operands 0-29, answers two digits, least-significant
first), in shuffled order; the RL recipe's held-out operand pairs are left out.

    python scripts/make_sft_arith.py [OUT]
"""

import json
import random
import sys

from rlinf.config.schema import DataConfig
from rlinf.envs.text import load_task


def main(out: str = "data/sft_arith.jsonl") -> None:
    task = load_task(DataConfig(task="arith", max_operand=29, answer_width=2, answer_reversed=True, eval_size=180))
    pairs = sorted({(s.prompt, s.answer) for s in task.train})
    random.Random(0).shuffle(pairs)
    with open(out, "w") as fh:
        for prompt, answer in pairs:
            fh.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": answer}]}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
