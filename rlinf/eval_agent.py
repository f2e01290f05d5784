"""`python -m rlinf.eval` on a text agent (`runner.workflow: agent`, or `auto` with `env.tools`): the
checkpoint's policy plays the held-out prompts in the tool environment and every episode is written out.

    python -m rlinf.eval --config configs/grpo_calc_agent.yaml --checkpoint runs/grpo_calc_agent

    prompts   every held-out prompt of `data` (`load_task(cfg.data).eval`: the set the run's own evaluation
              plays; `data.eval_size=N` keeps the first N of it), one greedy episode each. `eval.num_episodes`
              and `eval.seed` are the simulators' knobs and are not read here.
    policy    the checkpoint's actor weights (`actor/`, torch.distributed.checkpoint shards, loaded without a
              process group) in the causal LM `actor.model` builds, checked tensor by tensor against that
              model first; turns are generated greedily (`rollout.max_new_tokens`, stop at the env's stop
              strings or EOS) exactly as the run's rollout does, on cuda when `cluster.device_type` allows
    episodes  the run's envs, prompts and tokens (`rlinf.workers.env.agent_episodes.AgentEpisodes`: env.tools,
              env.max_turns, env.scheduling, the verifier `reward.name`), so a greedy evaluation here plays
              the same episodes as the run's own evaluation at that step
    writes    `<out>/transcripts.jsonl` (one record per episode: prompt, reference answer, task, reward,
              correct, turns, tool calls, why it ended, and every model turn / tool result as decoded text;
              `rlinf.workflows.transcripts`), `<out>/transcripts.md` (the same, readable, with the accuracy
              per task on top) and `<out>/eval_summary.json` ({"tasks": {task: num_episodes, accuracy,
              mean_reward, tool_call_rate, mean_turns}, "overall": the same over every episode, checkpoint,
              step, ...}); the accuracy per task is logged too. `<out>` is `eval.output_dir`, default
              `<run dir>/eval-<timestamp>`.

Bad input (no checkpoint, a checkpoint without actor shards or of another model shape, unknown tools or
verifier, no held-out prompts) raises `InputError` before anything is written. `evaluate_agent(...,
generate=fn)` plays a given policy instead (`fn(contexts) -> (tokens, logprobs)`, see
`rlinf.envs.agent.episodes`); then the checkpoint may be None when `eval.output_dir` is set.
"""

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from rlinf.config import RLinfConfig
from rlinf.envs.agent.episodes import Generate
from rlinf.errors import InputError
from rlinf.workers.env.agent_episodes import AgentEpisodes
from rlinf.workers.rollout.sampling import SamplingParams, sample
from rlinf.workflows.transcripts import accuracy_by_task, episode_record, write_transcripts

logger = logging.getLogger("rlinf.eval")

TRANSCRIPTS = "transcripts"  # <out>/transcripts.jsonl and .md


def eval_device(cfg: RLinfConfig) -> torch.device:
    """cuda when `cluster.device_type` is cuda, or auto with a GPU present; else cpu."""
    want = cfg.cluster.device_type
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def load_actor_lm(cfg: RLinfConfig, ckpt: Path, vocab_size: int) -> torch.nn.Module:
    """The causal LM of `actor.model` holding the actor weights of checkpoint directory `ckpt` (its
    `actor/` torch.distributed.checkpoint, any number of shards, read in this process without a process
    group), in eval mode on `eval_device`. InputError when the shards are missing or do not fit."""
    import torch.distributed.checkpoint as dcp

    from rlinf.models.causal_lm import build_causal_lm
    from rlinf.preflight import check_actor_shards

    folder = ckpt / "actor"
    if not (folder / ".metadata").is_file():
        raise InputError("not a causal-LM actor checkpoint (actor/.metadata missing)", key=str(ckpt))
    check_actor_shards(cfg, folder, str(ckpt))
    model = build_causal_lm(cfg.actor.model, vocab_size, seed=cfg.runner.seed)
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # no_dist is the intent here: not worth a warning on every evaluation
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.load(state, checkpoint_id=str(folder), no_dist=True)  # in place, into the model's own tensors
    model.load_state_dict(state["model"])
    return model.to(eval_device(cfg)).eval()


class GreedyTurns:
    """`generate` for `run_episodes`: one greedy turn per context from `model`, as the rollout worker's
    `generate_turns(greedy=True)` makes it (same sampler, same stop sequences, same token limit)."""

    def __init__(self, model: torch.nn.Module, cfg: RLinfConfig, episodes: AgentEpisodes):
        tok = episodes.tokenizer
        self.model, self.eos_id, self.pad_id = model, tok.eos_token_id, tok.pad_token_id
        self.stop_token_seqs = episodes.stop_token_seqs
        self.params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0,
                                     top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k)

    def __call__(self, contexts: Sequence[Sequence[int]]) -> Tuple[List[List[int]], List[List[float]]]:
        gen = sample(self.model, contexts, self.params, self.eos_id, self.pad_id, None,
                     stop_token_seqs=self.stop_token_seqs)
        lengths = gen.mask.sum(1).long().tolist()
        return ([row[:n].tolist() for row, n in zip(gen.responses, lengths)],
                [row[:n].tolist() for row, n in zip(gen.logprobs, lengths)])


def evaluate_agent(cfg: RLinfConfig, checkpoint: Optional[str], config_path: str = "",
                   generate: Optional[Generate] = None) -> Dict[str, Any]:
    """Evaluate the checkpoint (or `generate`) on the held-out prompts (module docstring); returns the
    summary (also written to <output_dir>/eval_summary.json) with `output_dir` added."""
    from rlinf.envs.text import load_task
    from rlinf.eval import resolve_checkpoint

    torch.set_num_threads(cfg.cluster.threads_per_worker)
    episodes = AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model)
    samples = list(load_task(cfg.data).eval)
    if not samples:
        raise InputError("the task has no held-out prompts to evaluate on", key="data.eval_size")
    ckpt, step, run_dir = resolve_checkpoint(checkpoint) if checkpoint is not None else (None, None, None)
    if run_dir is None and not cfg.eval.output_dir:
        raise InputError("evaluating a policy without a checkpoint needs an output directory", key="eval.output_dir")
    if generate is None:
        generate = GreedyTurns(load_actor_lm(cfg, ckpt, len(episodes.tokenizer)), cfg, episodes)
    out_dir = Path(cfg.eval.output_dir) if cfg.eval.output_dir else run_dir / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)

    source = f"checkpoint {ckpt} (step {step})" if ckpt else "the given policy"
    logger.info("evaluating %s on %d held-out prompts of data.task %s (greedy, tools: %s)", source, len(samples),
                cfg.data.task, ", ".join(cfg.env.tools))
    t0 = time.time()
    trajectories = episodes.play(samples, generate, timeout_s=cfg.cluster.wait_timeout_s)
    records = [episode_record(t, s, episodes.tokenizer) for t, s in zip(trajectories, samples)]
    jsonl = write_transcripts(records, out_dir, TRANSCRIPTS, f"Evaluation of {source} on data.task {cfg.data.task}")
    tasks = accuracy_by_task(records)
    overall = accuracy_by_task([{**r, "task": "overall"} for r in records])["overall"]
    for name, stats in tasks.items():
        logger.info("%s: accuracy %.1f%% over %d episodes (tool-call rate %.1f%%, %.2f turns per episode)", name,
                    100 * stats["accuracy"], stats["num_episodes"], 100 * stats["tool_call_rate"], stats["mean_turns"])
    summary = {"checkpoint": str(ckpt) if ckpt else None, "step": step, "config": config_path, "workflow": "agent",
               "data_task": cfg.data.task, "tools": list(cfg.env.tools), "greedy": True, "tasks": tasks,
               "overall": overall, "transcripts": {"jsonl": str(jsonl), "markdown": str(jsonl.with_suffix(".md"))},
               "wall_time_s": time.time() - t0}
    (out_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s (overall accuracy %.1f%% over %d episodes) and %s", out_dir / "eval_summary.json",
                100 * overall["accuracy"], overall["num_episodes"], jsonl)
    summary["output_dir"] = str(out_dir)
    return summary
