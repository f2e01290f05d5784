"""Command line: python -m rlinf.eval --config configs/X.yaml --checkpoint DIR [key=value ...]

Evaluates the policy of an embodied checkpoint in its simulator and writes `eval_summary.json` (and,
with `eval.video=true`, mp4 videos) to `eval.output_dir` (default: `<run dir>/eval-<timestamp>`).

    DIR       a checkpoint directory (`<run>/checkpoints/step_N`) or a run directory (its newest
              complete checkpoint is used)
    per task  `eval.num_episodes` greedy episodes (argmax / mean action); episode i starts from
              reset seed `eval.seed + i`, so results do not depend on how many run side by side
              (`env.num_envs` at a time)
    summary   per task: num_episodes, mean_return, return_std, mean_length, success_rate (null when
              the task reports no success), and every episode's seed / return / length / success
    videos    the first `eval.num_videos` episodes of each task, rendered with
              render_mode="rgb_array", task id, step, return and outcome drawn on each frame

The evaluation runs in this process (no Ray, no worker groups): the policy is an MLP that steps a
batch of gymnasium envs on the CPU. The tasks are `env.id` (one task per config today).

Bad input (missing or incomplete checkpoint, a checkpoint of another model shape or task, unknown
env id, bad keys) prints one line and exits with code 2 before anything is written.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rlinf.config import RLinfConfig, load_config
from rlinf.errors import InputError

logger = logging.getLogger("rlinf.eval")

MAX_EPISODE_STEPS = 100_000  # guard against tasks without a time limit
_SUCCESS_KEYS = ("success", "is_success")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlinf.eval", description="Evaluate an embodied checkpoint.")
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


def load_policy(cfg: RLinfConfig, ckpt: Path, obs_dim: int, action_dim: int, discrete: bool):
    """The checkpoint's MLP actor-critic, checked against the config's model and the task's spaces."""
    import torch

    from rlinf.models.policy import build_policy, state_spec

    meta_file, model_file = ckpt / "actor" / "meta.json", ckpt / "actor" / "model.pt"
    if not meta_file.exists() or not model_file.exists():
        raise InputError("not an embodied checkpoint (actor/meta.json, actor/model.pt missing)", key=str(ckpt))
    saved = json.loads(meta_file.read_text())
    if cfg.actor.model.kind != "mlp":
        raise InputError(f"rlinf.eval evaluates mlp policies, got '{cfg.actor.model.kind}'", key="actor.model.kind")
    expected = {"kind": "mlp", "obs_dim": obs_dim, "action_dim": action_dim, "discrete": discrete,
                "hidden_size": cfg.actor.model.hidden_size, "num_layers": cfg.actor.model.num_layers}
    if saved.get("model") != expected:
        raise InputError(f"checkpoint holds a {_spec_text(saved.get('model'))} policy"
                         f"{' for ' + saved['env_id'] if saved.get('env_id') else ''}; config and task "
                         f"'{cfg.env.id}' need a {_spec_text(expected)} one", key=str(ckpt))
    model = build_policy(cfg.actor.model, state_spec(obs_dim, action_dim, discrete), cfg.runner.seed)
    try:
        model.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True), strict=True)
    except (RuntimeError, ValueError, OSError) as e:
        raise InputError(f"cannot load the policy weights: {str(e).splitlines()[0]}", key=str(model_file)) from e
    return model.eval()


def _spec_text(spec: Optional[Dict[str, Any]]) -> str:
    if not spec:
        return "unknown"
    kind = "discrete" if spec["discrete"] else "continuous"
    return f"{spec['obs_dim']}->{spec['action_dim']} {kind} ({spec['num_layers']} x {spec['hidden_size']})"


# ---- episodes ------------------------------------------------------------------------------------
def _make_env(env_id: str, max_episode_steps: Optional[int], render: bool):
    import gymnasium as gym

    kwargs: Dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if render:
        kwargs["render_mode"] = "rgb_array"
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame-rendered tasks: no display needed
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # e.g. pygame for classic-control rendering
        raise InputError(f"cannot render '{env_id}': {e}", key="eval.video") from e


def _success(info: Dict[str, Any]) -> Optional[bool]:
    for key in _SUCCESS_KEYS:
        if key in info:
            return bool(np.asarray(info[key]).any())
    return None


def run_episodes(model, cfg: RLinfConfig, env_id: str, out_dir: Optional[Path]) -> Dict[str, Any]:
    """`eval.num_episodes` greedy episodes of `env_id`, `env.num_envs` at a time; videos into out_dir."""
    import torch

    ev = cfg.eval
    n_video = ev.num_videos if ev.video else 0
    episodes: List[Dict[str, Any]] = []
    videos: List[str] = []
    batch = max(1, min(cfg.env.num_envs, ev.num_episodes))
    for first in range(0, ev.num_episodes, batch):
        idx = list(range(first, min(first + batch, ev.num_episodes)))
        envs = [_make_env(env_id, cfg.env.max_episode_steps, i < n_video) for i in idx]
        try:
            space = envs[0].action_space
            discrete = hasattr(space, "n")
            obs = [np.asarray(env.reset(seed=ev.seed + i)[0], dtype=np.float32) for env, i in zip(envs, idx)]
            returns, lengths = np.zeros(len(idx)), np.zeros(len(idx), dtype=np.int64)
            success: List[Optional[bool]] = [None] * len(idx)
            done = np.zeros(len(idx), dtype=bool)
            frames: Dict[int, list] = {j: [] for j, i in enumerate(idx) if i < n_video}
            for j in frames:
                frames[j].append(_annotate(envs[j].render(), env_id, idx[j], 0, 0.0, None))
            for _ in range(MAX_EPISODE_STEPS):
                live = np.flatnonzero(~done)
                if not len(live):
                    break
                with torch.no_grad():
                    x = torch.as_tensor(np.stack([obs[j] for j in live]), dtype=torch.float32)
                    actions = model.act(x, greedy=True)[0].numpy()
                for j, a in zip(live, actions):
                    if discrete:
                        a = int(a)
                    else:
                        a = np.clip(a.reshape(space.shape), space.low, space.high).astype(space.dtype)
                    o, r, term, trunc, info = envs[j].step(a)
                    obs[j] = np.asarray(o, dtype=np.float32)
                    returns[j] += float(r)
                    lengths[j] += 1
                    if term or trunc:
                        done[j] = True
                        success[j] = _success(info)
                    if j in frames:
                        outcome = _outcome(success[j], bool(term), bool(trunc)) if done[j] else None
                        frames[j].append(_annotate(envs[j].render(), env_id, idx[j], int(lengths[j]),
                                                   float(returns[j]), outcome))
            else:
                raise RuntimeError(f"{env_id}: episodes did not end within {MAX_EPISODE_STEPS} steps")
            for j, i in enumerate(idx):
                episodes.append({"seed": ev.seed + i, "return": float(returns[j]), "length": int(lengths[j]),
                                 "success": success[j]})
            for j, fr in frames.items():
                path = out_dir / f"{_safe(env_id)}_episode{idx[j]:03d}.mp4"
                fps = int(envs[j].metadata.get("render_fps") or 30)
                _write_video(path, fr, fps)
                videos.append(str(path))
        finally:
            for env in envs:
                env.close()
    rets = [e["return"] for e in episodes]
    succ = [e["success"] for e in episodes if e["success"] is not None]
    return {"num_episodes": len(episodes), "mean_return": float(np.mean(rets)), "return_std": float(np.std(rets)),
            "mean_length": float(np.mean([e["length"] for e in episodes])),
            "success_rate": float(np.mean(succ)) if succ else None, "episodes": episodes, "videos": videos}


def _outcome(success: Optional[bool], terminated: bool, truncated: bool) -> str:
    if success is not None:
        return "SUCCESS" if success else "FAILURE"
    return "terminated" if terminated else "time limit"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---- video ---------------------------------------------------------------------------------------
def _annotate(frame, env_id: str, episode: int, step: int, ret: float, outcome: Optional[str]) -> np.ndarray:
    """The frame with task id, episode, step, return (and, on the last frame, the outcome) drawn on it."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, img.height // 25))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    lines = [f"{env_id}  episode {episode}", f"step {step}  return {ret:.1f}"]
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
def evaluate(cfg: RLinfConfig, checkpoint: str, config_path: str = "") -> Dict[str, Any]:
    """Evaluate the checkpoint; returns the summary (also written to <output_dir>/eval_summary.json)."""
    import torch

    from rlinf.envs.gym_env import GymVectorEnv, check_env_id

    torch.set_num_threads(cfg.cluster.threads_per_worker)
    if cfg.env.id is None:
        raise InputError("rlinf.eval evaluates simulator tasks; the config names none", key="env.id")
    tasks = [cfg.env.id]
    for task in tasks:
        check_env_id(task)
    ckpt, step, run_dir = resolve_checkpoint(checkpoint)
    policies = {}
    for task in tasks:  # load and check everything before anything is written
        probe = GymVectorEnv(task, 1, cfg.env.max_episode_steps)
        try:
            policies[task] = load_policy(cfg, ckpt, probe.obs_dim, probe.action_dim, probe.discrete)
        finally:
            probe.close()
    out_dir = Path(cfg.eval.output_dir) if cfg.eval.output_dir else run_dir / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = {}
    for task in tasks:
        logger.info("evaluating %s: %d episodes", task, cfg.eval.num_episodes)
        results[task] = run_episodes(policies[task], cfg, task, out_dir)
        logger.info("%s: mean return %.2f, mean length %.1f, success rate %s", task, results[task]["mean_return"],
                    results[task]["mean_length"], results[task]["success_rate"])
    summary = {"checkpoint": str(ckpt), "step": step, "config": config_path, "seed": cfg.eval.seed,
               "num_episodes": cfg.eval.num_episodes, "greedy": True, "tasks": results,
               "videos": [v for r in results.values() for v in r["videos"]], "wall_time_s": time.time() - t0}
    (out_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s", out_dir / "eval_summary.json")
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
