"""Command line: python -m rlinf.eval --config configs/X.yaml --checkpoint DIR [key=value ...]

Evaluates the policy of an embodied checkpoint in its simulator and writes `eval_summary.json` (and,
with `eval.video=true`, mp4 videos) to `eval.output_dir` (default: `<run dir>/eval-<timestamp>`).

    DIR       a checkpoint directory (`<run>/checkpoints/step_N`) or a run directory (its newest
              complete checkpoint is used)
    tasks     gym / maniskill: `env.id`. libero: every task of the suite `env.id` (or `env.task_ids`),
              as the LIBERO benchmark protocol does
    episodes  per task `eval.num_episodes` greedy episodes (argmax / mean action), `env.num_envs` at a
              time. gym / maniskill: episode i starts from reset seed `eval.seed + i`. libero: episode i
              starts from the task's fixed init state i (at most 50). Results do not depend on how many
              run side by side.
    summary   per task: num_episodes, mean_return, return_std, mean_length, success_rate (null when
              the task reports no success) and every episode's seed / return / length / success; for
              libero also the task's instruction and each episode's init state; `overall`: the same
              over all tasks' episodes
    videos    the first `eval.num_videos` episodes of each task from `env.render()`, with the task
              (libero: its instruction), step, return and, on the last frame, the outcome drawn on
              each frame. Vector envs reset in the step an episode ends, so the last frame repeats
              the state before the final action.

The evaluation runs in this process (no Ray, no worker groups): envs come from
`rlinf.envs.make_vector_env`, the policy from `rlinf.models.policy.build_policy` with the checkpoint's
weights. The episode loop only sees observations in and actions out (`Policy`), so any object with
`act(obs) -> actions` (numpy batches, see `CheckpointPolicy`) can be evaluated with `evaluate(...,
policy=...)`.

Text agents (`runner.workflow: agent`, or `auto` with `env.tools`): the checkpoint's actor plays every
held-out prompt of `data` greedily in the tool environment, and `transcripts.jsonl` / `transcripts.md`
(every model turn, tool call and tool result) and `eval_summary.json` (accuracy per task and overall) are
written; see `rlinf.eval_agent`.

Bad input (missing or incomplete checkpoint, a checkpoint of another model shape or task, unknown
env id, bad keys) prints one line and exits with code 2 before anything is written.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np

from rlinf.config import RLinfConfig, load_config
from rlinf.errors import InputError

logger = logging.getLogger("rlinf.eval")

MAX_EPISODE_STEPS = 100_000  # guard against tasks without a time limit
MIN_VIDEO_SIZE = 384  # small camera frames (LIBERO's 128 px) are upscaled so the text stays readable


class Policy(Protocol):
    """What the episode loop needs: a batch of env observations in, a batch of actions out.

    `act(obs)` gets numpy observations [B, ...] (or the dict form of image tasks) and returns actions
    [B, *action_shape], or [B, C, *action_shape] when `action_chunk` C > 1 (executed open-loop).
    """

    action_chunk: int

    def act(self, obs: Any) -> np.ndarray:
        ...


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlinf.eval", description="Evaluate an embodied or text-agent checkpoint.")
    p.add_argument("--config", required=True, help="YAML recipe the checkpoint was trained with")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoints/step_N directory, or a run directory (newest complete checkpoint)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. eval.num_episodes=20")
    return p


# ---- checkpoint -> policy ------------------------------------------------------------------------
def resolve_checkpoint(path: str) -> Tuple[Path, int, Path]:
    """(checkpoint dir, its step, the run dir it belongs to) for a checkpoint or run directory."""
    from rlinf.runners import checkpoints

    ckpt, step = checkpoints.latest(Path(path))
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    return ckpt, step, run_dir


class CheckpointPolicy:
    """A trained actor-critic acting greedily on numpy observation batches."""

    def __init__(self, model):
        from rlinf.models.policy import chunk_of

        self.model = model.eval()
        self.action_chunk = chunk_of(model)

    def act(self, obs: Any) -> np.ndarray:
        import torch

        from rlinf.models.policy import to_tensors

        with torch.no_grad():
            return self.model.act(to_tensors(obs), greedy=True)[0].cpu().numpy()


def load_policy(cfg: RLinfConfig, ckpt: Path, spec: Dict[str, Any]) -> CheckpointPolicy:
    """The checkpoint's actor-critic, checked against the config's model and the task's spaces."""
    import torch

    from rlinf.models.policy import build_policy, policy_spec

    meta_file, model_file = ckpt / "actor" / "meta.json", ckpt / "actor" / "model.pt"
    if not meta_file.exists() or not model_file.exists():
        raise InputError("not an embodied checkpoint (actor/meta.json, actor/model.pt missing)", key=str(ckpt))
    saved = json.loads(meta_file.read_text())
    expected = json.loads(json.dumps(policy_spec(cfg.actor.model, spec)))  # tuples -> lists, as saved
    if saved.get("model") != expected:
        raise InputError(f"checkpoint holds a {_spec_text(saved.get('model'))} policy"
                         f"{' for ' + saved['env_id'] if saved.get('env_id') else ''}; config and task "
                         f"'{cfg.env.id}' need a {_spec_text(expected)} one", key=str(ckpt))
    from rlinf.models.lora import load_weights

    # a LoRA checkpoint holds the trainable tensors only: rebuild the frozen base from the run's seed
    model = build_policy(cfg.actor.model, spec, int(saved.get("base_seed", cfg.runner.seed)))
    try:
        load_weights(model, torch.load(model_file, map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError, OSError) as e:
        raise InputError(f"cannot load the policy weights: {str(e).splitlines()[0]}", key=str(model_file)) from e
    return CheckpointPolicy(model)


def _spec_text(spec: Optional[Dict[str, Any]]) -> str:
    if not spec:
        return "unknown"
    kind = "discrete" if spec["discrete"] else "continuous"
    return (f"{spec.get('kind', '?')} {spec['obs_dim']}->{spec['action_dim']} {kind} "
            f"({spec['num_layers']} x {spec['hidden_size']})")


# ---- tasks ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalTask:
    name: str  # key in the summary
    env_cfg: Any  # EnvConfig of one task
    seed_base: int  # episode i resets with seed seed_base + i
    info: Dict[str, Any]  # extra summary fields (libero: task_id, instruction)
    label: str  # drawn on video frames


def eval_tasks(cfg: RLinfConfig) -> List[EvalTask]:
    """The tasks `python -m rlinf.eval` runs for this config (checked; nothing is built yet)."""
    from rlinf.envs import check_env

    if cfg.env.id is None:
        raise InputError("rlinf.eval evaluates simulator tasks (env.id) and text agents (runner.workflow agent); "
                         "the config names neither", key="env.id")
    check_env(cfg.env)
    if cfg.env.simulator != "libero":
        return [EvalTask(cfg.env.id, cfg.env, cfg.eval.seed, {}, cfg.env.id)]
    from rlinf.envs import libero_env

    suite = libero_env.get_suite(cfg.env.id)
    ids = list(cfg.env.task_ids) if cfg.env.task_ids else list(range(suite.n_tasks))
    bad = [t for t in ids if not 0 <= t < suite.n_tasks]
    if bad:
        raise InputError(f"task ids {bad} are not tasks of {cfg.env.id} (0 .. {suite.n_tasks - 1})",
                         key="env.task_ids")
    tasks = []
    for t in ids:
        n_init = len(libero_env.load_init_states(suite, t))
        if cfg.eval.num_episodes > n_init:
            raise InputError(f"{cfg.env.id} task {t} has {n_init} fixed init states; the LIBERO protocol runs "
                             f"episode i from init state i, so at most {n_init} episodes", key="eval.num_episodes")
        task = suite.get_task(t)
        # episode i starts from init state i: the env's init state for seed s, slot 0, is s mod 50
        tasks.append(EvalTask(task.name, dataclasses.replace(cfg.env, task_ids=[t]), 0,
                              {"task_id": t, "instruction": task.language}, task.language))
    return tasks


# ---- episodes ------------------------------------------------------------------------------------
def run_episodes(policy: Policy, cfg: RLinfConfig, task: EvalTask, out_dir: Optional[Path],
                 env: Any = None) -> Dict[str, Any]:
    """`eval.num_episodes` episodes of `task`, `env.num_envs` at a time; videos into out_dir.

    Slot j of a batch starting at episode `first` is reset with seed `seed_base + first + j`; the vector
    env auto-resets finished slots, whose later episodes are ignored. `env` (optional) is a vector env of
    the task with the batch size, reused instead of building one.
    """
    from rlinf.envs import make_vector_env

    ev = cfg.eval
    n_video = ev.num_videos if ev.video else 0
    batch = max(1, min(cfg.env.num_envs, ev.num_episodes))
    env = env if env is not None else make_vector_env(task.env_cfg, batch)
    episodes: List[Dict[str, Any]] = []
    videos: List[str] = []
    try:
        fps = int(getattr(env, "metadata", {}).get("render_fps") or 30)
        for first in range(0, ev.num_episodes, batch):
            n = min(batch, ev.num_episodes - first)
            results, frames = _run_batch(policy, env, task, first, n, n_video)
            episodes += results
            for j, fr in frames.items():
                path = out_dir / f"{_safe(task.name)}_episode{first + j:03d}.mp4"
                _write_video(path, fr, fps)
                videos.append(str(path))
    finally:
        env.close()
    summary = _stats(episodes)
    summary.update(task.info)
    summary.update({"episodes": episodes, "videos": videos})
    return summary


def _run_batch(policy: Policy, env: Any, task: EvalTask, first: int, n: int,
               n_video: int) -> Tuple[List[Dict[str, Any]], Dict[int, List[np.ndarray]]]:
    """Episodes first .. first + n - 1 in slots 0 .. n - 1 (until each slot's first episode ends)."""
    seed = task.seed_base + first
    obs = env.reset(seed=seed)
    live = np.zeros(env.num_envs, dtype=bool)
    live[:n] = True
    records: List[Dict[str, Any]] = [{} for _ in range(n)]
    frames: Dict[int, List[np.ndarray]] = {j: [] for j in range(n) if first + j < n_video}
    last: Dict[int, np.ndarray] = {}  # latest raw frame of each recorded slot
    returns = np.zeros(env.num_envs)
    if frames:
        shot = _render(env)
        for j in frames:
            last[j] = shot[j]
            frames[j].append(_annotate(shot[j], task.label, first + j, 0, 0.0, None))
    chunk = max(1, int(getattr(policy, "action_chunk", 1)))
    pending = None
    for t in range(MAX_EPISODE_STEPS):
        if not live.any():
            break
        if t % chunk == 0:
            pending = np.asarray(policy.act(obs))
        actions = pending if chunk == 1 else pending[:, t % chunk]
        obs, rewards, terminated, _, info = env.step(actions)
        returns += rewards
        shot = _render(env) if any(live[j] for j in frames) else None
        for j in np.flatnonzero(live):
            done = bool(info["done"][j])
            success = bool(info["success"][j]) if info["has_success"] else None
            length = int(info["episode_length"][j]) if done else t + 1
            if done:
                live[j] = False
                records[j] = {"seed": seed + int(j), "return": float(info["episode_return"][j]), "length": length,
                              "success": success}
                if "task_id" in task.info:  # libero: episode i ran from init state i
                    records[j]["init_state"] = seed + int(j)
            if j in frames:
                if not done:  # a finished slot already shows its next episode: repeat its last frame
                    last[j] = shot[j]
                outcome = _outcome(success, bool(terminated[j])) if done else None
                frames[j].append(_annotate(last[j], task.label, first + int(j), length, float(returns[j]), outcome))
    else:
        raise RuntimeError(f"{task.name}: episodes did not end within {MAX_EPISODE_STEPS} steps")
    return records, frames


def _render(env: Any) -> np.ndarray:
    import gymnasium as gym

    try:
        return env.render()
    except gym.error.DependencyNotInstalled as e:  # e.g. pygame for classic-control rendering
        raise InputError(f"cannot render '{getattr(env, 'env_id', '?')}': {e}", key="eval.video") from e


def _stats(episodes: List[Dict[str, Any]]) -> Dict[str, Any]:
    rets = [e["return"] for e in episodes]
    succ = [e["success"] for e in episodes if e["success"] is not None]
    return {"num_episodes": len(episodes), "mean_return": float(np.mean(rets)), "return_std": float(np.std(rets)),
            "mean_length": float(np.mean([e["length"] for e in episodes])),
            "success_rate": float(np.mean(succ)) if succ else None}


def _outcome(success: Optional[bool], terminated: bool) -> str:
    if success is not None:
        return "SUCCESS" if success else "FAILURE"
    return "terminated" if terminated else "time limit"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---- video ---------------------------------------------------------------------------------------
def _annotate(frame, label: str, episode: int, step: int, ret: float, outcome: Optional[str]) -> np.ndarray:
    """The frame (upscaled when small) with the task label (wrapped), episode, step, return and, on the
    last frame, the outcome drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    if min(img.size) < MIN_VIDEO_SIZE:
        scale = -(-MIN_VIDEO_SIZE // min(img.size))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    size = max(12, img.height // 25)
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    width = max(10, int(img.width / (0.6 * size)) - 2)
    lines = textwrap.wrap(label, width) + [f"episode {episode}  step {step}  return {ret:.1f}"]
    if outcome is not None:
        lines.append(outcome)
    y = 4
    for line in lines:
        box = draw.textbbox((6, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((6, y), line, font=font, fill=(255, 255, 0) if line == outcome else (255, 255, 255))
        y = box[3] + 6
    return np.asarray(img)


def _write_video(path: Path, frames: List[np.ndarray], fps: int) -> None:
    """H.264 mp4 through imageio-ffmpeg (its bundled ffmpeg binary); odd sizes are padded to even."""
    import imageio.v2 as imageio

    h, w = frames[0].shape[:2]
    ph, pw = h % 2, w % 2
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as writer:
        for f in frames:
            if ph or pw:
                f = np.pad(f, ((0, ph), (0, pw), (0, 0)))
            writer.append_data(f)


# ---- entry point ---------------------------------------------------------------------------------
def evaluate(cfg: RLinfConfig, checkpoint: Optional[str], config_path: str = "",
             policy: Optional[Policy] = None) -> Dict[str, Any]:
    """Evaluate the checkpoint (or `policy`, then `checkpoint` may be None and eval.output_dir must be
    set); returns the summary (also written to <output_dir>/eval_summary.json). An agent config is
    evaluated by `rlinf.eval_agent.evaluate_agent` (`policy` does not apply there)."""
    import torch

    from rlinf.workflows import workflow_name

    if workflow_name(cfg) == "agent":
        if policy is not None:
            raise ValueError("an agent is evaluated from its checkpoint (rlinf.eval_agent.evaluate_agent takes "
                             "a generate function)")
        from rlinf.eval_agent import evaluate_agent

        return evaluate_agent(cfg, checkpoint, config_path)

    from rlinf.envs import make_vector_env, task_spec

    torch.set_num_threads(cfg.cluster.threads_per_worker)
    if cfg.eval.video:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame-rendered tasks: no display needed
    tasks = eval_tasks(cfg)
    ckpt, step, run_dir = resolve_checkpoint(checkpoint) if checkpoint is not None else (None, None, None)
    if run_dir is None and not cfg.eval.output_dir:
        raise InputError("evaluating a policy without a checkpoint needs an output directory", key="eval.output_dir")
    batch = max(1, min(cfg.env.num_envs, cfg.eval.num_episodes))
    first_env = make_vector_env(tasks[0].env_cfg, batch)  # checks the policy against the task before writing
    try:
        if policy is None:
            policy = load_policy(cfg, ckpt, task_spec(first_env))
        out_dir = (Path(cfg.eval.output_dir) if cfg.eval.output_dir
                   else run_dir / f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
        out_dir.mkdir(parents=True, exist_ok=True)
    except BaseException:
        first_env.close()
        raise
    t0 = time.time()
    results = {}
    for k, task in enumerate(tasks):
        logger.info("evaluating %s: %d episodes", task.name, cfg.eval.num_episodes)
        results[task.name] = run_episodes(policy, cfg, task, out_dir, env=first_env if k == 0 else None)
        logger.info("%s: mean return %.2f, mean length %.1f, success rate %s", task.name,
                    results[task.name]["mean_return"], results[task.name]["mean_length"],
                    results[task.name]["success_rate"])
    all_episodes = [e for r in results.values() for e in r["episodes"]]
    summary = {"checkpoint": str(ckpt) if ckpt else None, "step": step, "config": config_path,
               "simulator": cfg.env.simulator, "env_id": cfg.env.id, "seed": cfg.eval.seed,
               "num_episodes": cfg.eval.num_episodes, "greedy": True, "tasks": results,
               "overall": _stats(all_episodes), "videos": [v for r in results.values() for v in r["videos"]],
               "wall_time_s": time.time() - t0}
    if cfg.env.simulator == "libero":
        summary["protocol"] = "LIBERO: every task of the suite, episode i from the task's fixed init state i"
    (out_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s (overall success rate %s)", out_dir / "eval_summary.json", summary["overall"]["success_rate"])
    summary["output_dir"] = str(out_dir)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if not Path(args.checkpoint).is_dir():
            raise InputError("checkpoint directory not found", key=args.checkpoint)
        summary = evaluate(cfg, args.checkpoint, args.config)
        print(summary["output_dir"])
        return 0
    except InputError as e:
        print(f"rlinf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
