"""Multi-turn tool rollouts: per-trajectory scheduling (continuous batching) against lock-step rounds.

    python -m bench.agent_rollout [--quick] [--episodes 64] [--turns 8] [--turn-tokens 24] [--sigma 1.0]
                                  [--serial]

Workload: N episodes of T turns each. A turn is K tokens sampled by `rlinf.workers.rollout.sampling.sample`
(KV cache within the turn, the whole context re-encoded each turn, temperature 1, the tool-call stop
strings; EOS is not a stop, so every turn is exactly K tokens and all schedules generate the same
number of tokens) from a tiny random-weight Qwen2 (`build_causal_lm`: hidden 64, 2 layers, a char
vocabulary that covers the tool-call format), one torch thread. An untrained model writes no valid tool
calls, so the env is `LatencyEnv`: a ToolEnv whose every step counts as a tool call that sleeps a
log-normal time (median m, sigma S, drawn once per (episode, turn) from --seed, so every schedule sees
the same latencies) and returns ``<tool_result>ok</tool_result>``; the episode ends after T turns.

Calibration: a lock-step run with instant tools (also the warm-up) measures G, the mean time of one
generate call over all N contexts; m is set so the mean latency m * exp(S^2 / 2) equals G. In the timed
lock-step run each episode is in every round's generate call, so its own tool time is then about half of
its busy time: `tool_time_fraction` = mean tool seconds / (mean tool seconds + generate seconds), measured.

Schedules (all `rlinf.envs.agent.episodes.run_episodes`, same model, seeds and latencies):

  lockstep          rounds; the round's env steps run concurrently (tool_workers=N); a round waits for
                    its slowest tool, so each round costs G + the maximum of N latencies
  per_trajectory    continuous batching: whichever episodes are ready join the next generate call
  lockstep_serial   (--serial) rounds with env steps one after another (tool_workers=1), the driver as
                    it was before the scheduler: a round costs G + the sum of N latencies

Reported: wall seconds, tokens/s (model tokens / wall), generate calls and their mean batch, `speedup`
= per_trajectory / lockstep tokens/s (the stronger baseline; `speedup_vs_serial` with --serial), and
`straggler_model_speedup` (`straggler_model`): what the latency table alone predicts if every generate
call cost G whatever its batch. The batch ends with its slowest episode, so with few turns or few
episodes the gain is small (the model averages ~1.5x at N=16, T=4 and ~2.2x at N=64, T=8 over latency
draws). On CPU a generate call's cost grows with its rows (each turn re-encodes the context), so the
small per-trajectory batches are cheaper than G and the measured speedup can exceed the model.
--quick: one run per schedule (default two, alternating, best tokens/s kept). Last line: `RESULT {json}`.
"""

import argparse
import json
import logging
import math
import os
import random
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from rlinf.config import ModelConfig  # noqa: E402
from rlinf.envs.agent.episodes import run_episodes  # noqa: E402
from rlinf.envs.agent.tool_env import STOP_STRINGS, ToolEnv  # noqa: E402
from rlinf.envs.text import TextSample  # noqa: E402
from rlinf.models.causal_lm import build_causal_lm  # noqa: E402
from rlinf.models.tokenizer import DEFAULT_CHARS, CharTokenizer  # noqa: E402
from rlinf.workers.rollout.sampling import SamplingParams, sample  # noqa: E402

logger = logging.getLogger("bench.agent_rollout")

CHARS = DEFAULT_CHARS + '<>/{}"_\n'
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4)
SCHEDULES = {"lockstep_serial": dict(schedule="lockstep", tool_workers=1),
             "lockstep": dict(schedule="lockstep"),
             "per_trajectory": dict(schedule="per_trajectory")}


class LatencyEnv(ToolEnv):
    """A ToolEnv for throughput benches: every turn counts as a tool call that sleeps `latencies[turn]`
    seconds and returns ``<tool_result>ok</tool_result>``; the episode ends after len(latencies) turns."""

    def __init__(self, latencies):
        super().__init__(verifier=lambda response, answer: 0.0, tools=("sleep",), max_turns=len(latencies),
                         max_total_tokens=10 ** 9, system_prompt=None)
        self.latencies = list(latencies)

    def step(self, model_turn):
        if self.done:
            raise RuntimeError("step() on a finished episode: call reset(sample) first")
        start = time.monotonic()
        time.sleep(self.latencies[self.turn])
        self.turn += 1
        info = {"turn": self.turn, "kind": "tool", "truncated": False, "extra_tool_calls": 0, "tool": "sleep",
                "tool_ok": True, "tool_elapsed": time.monotonic() - start}
        observation = self.wrap_observation("ok")
        if self.turn >= self.max_turns:
            return observation, 0.0, self._finish(info, "max_turns", truncated=True), info
        return observation, 0.0, False, info


class Policy:
    """`generate(contexts)` over the tiny model with `sample`; counts calls, rows and seconds."""

    def __init__(self, model, tok, turn_tokens, seed):
        self.model, self.tok = model, tok
        self.params = SamplingParams(max_new_tokens=turn_tokens, temperature=1.0)
        self.stops = [tok.encode(s) for s in STOP_STRINGS]
        self.generator = torch.Generator().manual_seed(seed)
        self.calls, self.rows, self.seconds = 0, 0, 0.0

    def __call__(self, contexts):
        start = time.perf_counter()
        gen = sample(self.model, contexts, self.params, eos_id=-1, pad_id=self.tok.pad_token_id,
                     generator=self.generator, stop_token_seqs=self.stops)
        tokens, logprobs = [], []
        for row, logp, mask in zip(gen.responses, gen.logprobs, gen.mask):
            n = int(mask.sum())
            tokens.append(row[:n].tolist())
            logprobs.append(logp[:n].tolist())
        self.calls, self.rows = self.calls + 1, self.rows + len(contexts)
        self.seconds += time.perf_counter() - start
        return tokens, logprobs


def prompts(n):
    return [TextSample(f"task {i}: call the tool, then answer.", "0") for i in range(n)]


def latency_table(episodes, turns, median, sigma, seed):
    """[episode][turn] seconds, log-normal(log median, sigma)."""
    rng = random.Random(seed)
    return [[rng.lognormvariate(math.log(median), sigma) for _ in range(turns)] for _ in range(episodes)]


def straggler_model(latencies, gen_s):
    """The speedup a simple model predicts from the latency table: every generate call costs `gen_s`
    whatever its batch (GPU-like) and no episode waits for a call in progress. Lock-step: the sum over
    turns of (G + slowest latency); per-trajectory: the slowest episode's sum of (G + its latency), since
    the batch ends with its slowest episode."""
    turns = len(latencies[0])
    lock = sum(gen_s + max(row[t] for row in latencies) for t in range(turns))
    return lock / max(sum(gen_s + x for x in row) for row in latencies)


def measure_generate_per_turn(model, tok, episodes, turns, args):
    """Mean seconds of one generate call over all `episodes` contexts in a lock-step run with instant
    tools (contexts grow turn by turn as in the timed runs); the run also warms up."""
    zero = [[0.0] * turns for _ in range(episodes)]
    policy = Policy(model, tok, args.turn_tokens, seed=args.seed)
    run_episodes([LatencyEnv(row) for row in zero], prompts(episodes), policy, tok.encode, tok.decode,
                 schedule="lockstep", tool_workers=episodes)
    return policy.seconds / policy.calls


def run_schedule(name, model, tok, latencies, args):
    """Play the episodes under schedule `name`; its figures."""
    envs = [LatencyEnv(row) for row in latencies]
    policy = Policy(model, tok, args.turn_tokens, seed=args.seed)
    knobs = dict(SCHEDULES[name])
    knobs.setdefault("tool_workers", len(envs))
    start = time.perf_counter()
    trajectories = run_episodes(envs, prompts(len(envs)), policy, tok.encode, tok.decode, **knobs)
    wall = time.perf_counter() - start
    tokens = sum(t.num_model_tokens for t in trajectories)
    tool_s = [t.info["tool_seconds"] for t in trajectories]
    logger.info("%s: %.2f s, %d tokens, %d generate calls", name, wall, tokens, policy.calls)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "generate_calls": policy.calls,
            "mean_batch": policy.rows / policy.calls, "generate_s": policy.seconds,
            "tool_s_mean": statistics.mean(tool_s), "turns": sum(t.info["turns"] for t in trajectories)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run per schedule instead of two")
    parser.add_argument("--episodes", type=int, default=64, help="episodes in the batch")
    parser.add_argument("--turns", type=int, default=8, help="turns per episode")
    parser.add_argument("--turn-tokens", type=int, default=24, help="tokens generated per turn")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of the tool latency")
    parser.add_argument("--repeats", type=int, default=None, help="runs per schedule, alternating (default 2, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serial", action="store_true",
                        help="also run lockstep_serial (slow: each round sums N tool latencies)")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 2)
    return args


def report(best, args, gen_s, median, latencies, vocab):
    """Print the table; the RESULT dict."""
    print(f"{'schedule':<16} {'wall s':>7} {'tokens':>7} {'tokens/s':>9} {'gen calls':>9} {'mean batch':>10}")
    for name, f in best.items():
        print(f"{name:<16} {f['wall_s']:>7.2f} {f['tokens']:>7d} {f['tokens_per_s']:>9.1f} "
              f"{f['generate_calls']:>9d} {f['mean_batch']:>10.1f}")
    lock, per, serial = best["lockstep"], best["per_trajectory"], best.get("lockstep_serial")
    return {
        "bench": "agent_rollout", "speedup": round(per["tokens_per_s"] / lock["tokens_per_s"], 3),
        "speedup_vs_serial": round(per["tokens_per_s"] / serial["tokens_per_s"], 3) if serial else None,
        "tokens_per_s_lockstep": round(lock["tokens_per_s"], 1),
        "tokens_per_s_per_trajectory": round(per["tokens_per_s"], 1),
        "tokens_per_s_lockstep_serial": round(serial["tokens_per_s"], 1) if serial else None,
        "tool_time_fraction": round(lock["tool_s_mean"] / (lock["tool_s_mean"] + lock["generate_s"]), 3),
        "straggler_model_speedup": round(straggler_model(latencies, gen_s), 3),
        "wall_s": {name: round(f["wall_s"], 2) for name, f in best.items()},
        "generate_calls": {name: f["generate_calls"] for name, f in best.items()},
        "episodes": args.episodes, "turns": args.turns, "turn_tokens": args.turn_tokens, "sigma": args.sigma,
        "generate_s_per_lockstep_call": round(gen_s, 4), "latency_median_s": round(median, 4),
        "model": {"hidden": MODEL.hidden_size, "layers": MODEL.num_layers, "vocab": vocab},
        "repeats": args.repeats, "quick": args.quick, "seed": args.seed,
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    tok = CharTokenizer(CHARS)
    model = build_causal_lm(MODEL, tok.vocab_size, seed=args.seed).eval()
    gen_s = measure_generate_per_turn(model, tok, args.episodes, args.turns, args)
    median = gen_s / math.exp(args.sigma ** 2 / 2)
    latencies = latency_table(args.episodes, args.turns, median, args.sigma, args.seed)
    logger.info("lock-step generate call over %d contexts: %.3f s -> tool latency median %.3f s (mean %.3f s)",
                args.episodes, gen_s, median, gen_s)
    runs = {name: [] for name in SCHEDULES if args.serial or name != "lockstep_serial"}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(run_schedule(name, model, tok, latencies, args))
    best = {name: max(rs, key=lambda x: x["tokens_per_s"]) for name, rs in runs.items()}
    print("RESULT " + json.dumps(report(best, args, gen_s, median, latencies, tok.vocab_size)))


if __name__ == "__main__":
    main()
