"""PPO on CartPole-v1, wall time to solve: rlinf's recipe vs a CleanRL-style single-file PPO, same run.

    python -m bench.cartpole_vs_cleanrl [--quick] [--seeds 1 2 3] [--variants recipe cleanrl_settings]
                                        [--eval-every-steps N] [--no-early-stop] [key=value ...]

rlinf runs in two variants: `recipe` (configs/ppo_cartpole_mlp.yaml as shipped: 32 envs x 64 steps,
lr 1e-3, 150 updates) and `cleanrl_settings` (the same config with CleanRL's hyperparameters: 4 envs x
128 steps, lr 2.5e-4, minibatch 128, 976 updates = 500k env steps), so the table separates what the
recipe's hyperparameters buy from what the system costs. The key=value overrides go to every rlinf
run. Each seed runs the rlinf variant(s), then the baseline, alternating, in this process (imports
done once, before any clock starts). `--quick`: seed 1, recipe only.

Baseline. PyPI's `cleanrl` (0.4.8) is the 2020 layout (gym + stable-baselines3 `Monitor`), unusable
with gymnasium 1.4, so the baseline is written here with the published defaults of CleanRL's
`ppo.py` for CartPole-v1: 4 envs in a gymnasium SyncVectorEnv with RecordEpisodeStatistics, 128
steps per update (batch 512), lr 2.5e-4 annealed linearly to 0 over 500k env steps, 4 epochs of 4
minibatches, gamma 0.99, GAE lambda 0.95, clip 0.2 (also on the value), entropy 0.01, value 0.5,
max grad norm 0.5, Adam eps 1e-5, per-minibatch advantage normalisation, separate 64-64 tanh actor
and critic with orthogonal init (sqrt 2; policy head 0.01, value head 1), termination and
truncation both ending the bootstrap. CleanRL ran on gymnasium 0.29, whose vector envs reset in the
same step; gymnasium 1.x defaults to next-step reset, so the envs are built with
`AutoresetMode.SAME_STEP` to keep those semantics. One torch thread.

"Solved", the same for both: greedy (argmax) mean return >= 475 over 10 held-out episodes, the
protocol of `EmbodiedWorkflow.evaluate` with one env rank: episode i starts from reset seed
seed + EVAL_SEED_OFFSET + i. Both are checked every `--eval-every-steps` env steps (default
10,240 = 5 rlinf updates of 32 x 64 = 20 baseline updates of 4 x 128), and both pay for their
evaluations. Time to solve is from the run's start (rlinf: before the Ray cluster and the worker
groups start) to the end of the first solving evaluation; rlinf's is also given without start-up
(Ray + workers + the evaluation at start) and without any evaluation. Both stop at their first solving evaluation (rlinf through a bench-side subclass of its workflow that
records every evaluation's end time and raises at the first solve; `--no-early-stop` runs rlinf to
`runner.max_steps` and the baseline to 500k env steps). Per-phase times come from the controller's
phase events (`Runner.events`).
The last line printed is `RESULT {json}`.
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.workflows.embodied import EVAL_SEED_OFFSET, EmbodiedWorkflow
from rlinf.runners.runner import Runner

CONFIG = "configs/ppo_cartpole_mlp.yaml"
ENV_ID = "CartPole-v1"
SOLVED_RETURN = 475.0
EVAL_EPISODES = 10
EVAL_EVERY_STEPS = 10_240


def _median(xs: List[Optional[float]]) -> Optional[float]:
    """Median with unsolved runs (None) counted as slower than every solved one; None if that is the median."""
    ranked = sorted(xs, key=lambda x: float("inf") if x is None else x)
    n = len(ranked)
    if n % 2:
        return ranked[n // 2]
    lo, hi = ranked[n // 2 - 1], ranked[n // 2]
    return None if lo is None or hi is None else (lo + hi) / 2


# ---- rlinf ----------------------------------------------------------------------------------------
# rlinf with CleanRL's hyperparameters (same envs x steps, lr, minibatch, 976 updates = 500k env steps)
CLEANRL_SETTINGS = ["env.num_envs=4", "env.rollout_steps=128", "actor.lr=2.5e-4", "actor.global_batch_size=128",
                    "runner.max_steps=976"]
RLINF_VARIANTS = {"recipe": [], "cleanrl_settings": CLEANRL_SETTINGS}


class _Solved(Exception):
    pass


class _TimedWorkflow(EmbodiedWorkflow):
    """The recipe's workflow, recording (updates done, greedy return, end time) of every evaluation and, with
    `stop_when_solved`, ending the run at the first solving evaluation after the one at start."""

    stop_when_solved = True

    def __init__(self, *args):
        super().__init__(*args)
        self.evals: List[tuple] = []

    def evaluate(self) -> Dict[str, float]:
        out = super().evaluate()
        self.evals.append((self.version, out["return"], time.time()))
        if self.stop_when_solved and len(self.evals) > 1 and out["return"] >= SOLVED_RETURN:
            raise _Solved
        return out


def run_rlinf(seed: int, out: Path, eval_every_steps: int, overrides: List[str], stop_when_solved: bool) -> Dict:
    cfg = load_config(CONFIG, [f"runner.seed={seed}", f"runner.output_dir={out}", "runner.progress_bar=false",
                               "runner.plots=false", "runner.tensorboard=false", "runner.log_interval=1",
                               f"env.eval_episodes={EVAL_EPISODES}", *overrides])
    per_update = cfg.env.num_envs * cfg.env.rollout_steps  # one env rank in the recipe's placement
    if eval_every_steps % per_update:
        raise SystemExit(f"--eval-every-steps {eval_every_steps} is not a multiple of rlinf's {per_update} "
                         "env steps per update")
    cfg.runner.eval_interval = eval_every_steps // per_update
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    t0 = time.time()
    runner = Runner(cfg, placement, _TimedWorkflow, f"cartpole_seed{seed}")
    wf = runner.workflow
    wf.stop_when_solved = stop_when_solved
    try:
        runner.start()
        runner.fit()
    except _Solved:
        pass
    finally:
        runner.close()
    t_end = time.time()
    events = runner.events
    busy = _worker_busy(runner.run_dir.path / "timeline.json") if cfg.runner.timeline else {}
    startup_end = wf.evals[0][2]  # Ray, worker groups, first weight sync and the evaluation at start
    solve = next((i for i, e in enumerate(wf.evals) if i > 0 and e[1] >= SOLVED_RETURN), None)
    t_solve = wf.evals[solve][2] if solve is not None else None
    phases: Dict[str, float] = {}
    for e in events:
        if t_solve is None or e["end"] <= t_solve:
            phases[e["name"]] = phases.get(e["name"], 0.0) + e["end"] - e["start"]
    eval_events = sorted((e for e in events if e["name"] == "evaluate"), key=lambda e: e["start"])
    eval_time = sum(e["end"] - e["start"] for e in eval_events[1:] if t_solve is None or e["end"] <= t_solve)
    return {
        "solved": solve is not None,
        "time_to_solve_s": None if t_solve is None else t_solve - t0,
        "time_to_solve_excl_startup_s": None if t_solve is None else t_solve - startup_end,
        "time_to_solve_train_only_s": None if t_solve is None else t_solve - startup_end - eval_time,
        "env_steps_to_solve": None if solve is None else wf.evals[solve][0] * per_update,
        "startup_s": startup_end - t0,
        "eval_curve": [(v * per_update, round(r, 1)) for v, r, _ in wf.evals],
        "phases_to_solve_s": {k: round(v, 2) for k, v in phases.items() if k != "step"},
        "evals_to_solve": solve,
        "worker_busy_s": busy,
        "run_wall_s": t_end - t0,
    }


def _worker_busy(timeline: Path) -> Dict[str, float]:
    """Seconds each worker method ran over the whole run ('group.method'), from the run's Chrome trace."""
    trace = json.loads(timeline.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    busy: Dict[str, float] = {}
    for e in trace:
        if e["ph"] == "X" and names[e["pid"]] != "controller":
            key = f"{names[e['pid']]}.{e['name']}"
            busy[key] = busy.get(key, 0.0) + e["dur"] / 1e6
    return {k: round(v, 2) for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.05}


# ---- CleanRL-style baseline ------------------------------------------------------------------------
def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate 64-64 tanh actor and critic, orthogonally initialised (CleanRL's CartPole agent layout)."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        g = float(np.sqrt(2))
        self.critic = nn.Sequential(_layer(obs_dim, 64, g), nn.Tanh(), _layer(64, 64, g), nn.Tanh(), _layer(64, 1, 1.0))
        self.actor = nn.Sequential(_layer(obs_dim, 64, g), nn.Tanh(), _layer(64, 64, g), nn.Tanh(),
                                   _layer(64, n_actions, 0.01))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor, action: Optional[torch.Tensor] = None):
        dist = torch.distributions.Categorical(logits=self.actor(obs))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.value(obs)


def greedy_eval(policy, seed: int, episodes: int = EVAL_EPISODES) -> float:
    """Mean return of `episodes` greedy episodes, env i reset with seed + EVAL_SEED_OFFSET + i."""
    import gymnasium as gym

    envs = [gym.make(ENV_ID) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + EVAL_SEED_OFFSET + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        with torch.no_grad():
            actions = policy(torch.from_numpy(obs)).argmax(-1).numpy()
        for i in np.flatnonzero(alive):
            o, r, term, trunc, _ = envs[i].step(int(actions[i]))
            returns[i] += r
            obs[i] = o
            alive[i] = not (term or trunc)
    for env in envs:
        env.close()
    return float(returns.mean())


def run_cleanrl(seed: int, eval_every_steps: int, total_steps: int = 500_000, num_envs: int = 4,
                num_steps: int = 128, lr: float = 2.5e-4, epochs: int = 4, minibatches: int = 4,
                gamma: float = 0.99, lam: float = 0.95, clip: float = 0.2, ent_coef: float = 0.01,
                vf_coef: float = 0.5, max_grad_norm: float = 0.5, stop_when_solved: bool = True) -> Dict:
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    batch = num_envs * num_steps
    if eval_every_steps % batch:
        raise SystemExit(f"--eval-every-steps {eval_every_steps} is not a multiple of the baseline's {batch}")
    t0 = time.time()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    envs = SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(gym.make(ENV_ID)) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    agent = ActorCritic(int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.n))
    opt = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5)
    obs_buf = torch.zeros((num_steps, num_envs, *envs.single_observation_space.shape))
    act_buf = torch.zeros((num_steps, num_envs), dtype=torch.long)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros((num_steps, num_envs)) for _ in range(4))
    next_obs = torch.as_tensor(envs.reset(seed=seed)[0], dtype=torch.float32)
    next_done = torch.zeros(num_envs)
    n_updates = total_steps // batch
    mb = batch // minibatches
    times = {"collect": 0.0, "update": 0.0, "evaluate": 0.0}
    curve, solved_at, t_solve, eval_to_solve, global_step = [], None, None, 0.0, 0
    for update in range(1, n_updates + 1):
        for group in opt.param_groups:
            group["lr"] = lr * (1.0 - (update - 1.0) / n_updates)
        t = time.time()
        for step in range(num_steps):
            global_step += num_envs
            obs_buf[step], done_buf[step] = next_obs, next_done
            with torch.no_grad():
                action, logp, _, value = agent.act(next_obs)
            act_buf[step], logp_buf[step], val_buf[step] = action, logp, value
            o, r, term, trunc, _ = envs.step(action.numpy())
            rew_buf[step] = torch.as_tensor(r, dtype=torch.float32)
            next_obs = torch.as_tensor(o, dtype=torch.float32)
            next_done = torch.as_tensor(np.logical_or(term, trunc), dtype=torch.float32)
        with torch.no_grad():  # GAE, bootstrapping from the observation after the last step
            next_value = agent.value(next_obs)
            adv = torch.zeros_like(rew_buf)
            running = torch.zeros(num_envs)
            for step in reversed(range(num_steps)):
                not_done = 1.0 - (next_done if step == num_steps - 1 else done_buf[step + 1])
                v_next = next_value if step == num_steps - 1 else val_buf[step + 1]
                delta = rew_buf[step] + gamma * v_next * not_done - val_buf[step]
                running = delta + gamma * lam * not_done * running
                adv[step] = running
            ret = adv + val_buf
        times["collect"] += time.time() - t
        t = time.time()
        b_obs, b_act = obs_buf.reshape(batch, -1), act_buf.reshape(-1)
        b_logp, b_adv, b_ret, b_val = logp_buf.reshape(-1), adv.reshape(-1), ret.reshape(-1), val_buf.reshape(-1)
        for _ in range(epochs):
            order = np.random.permutation(batch)
            for start in range(0, batch, mb):
                idx = order[start:start + mb]
                _, logp, entropy, value = agent.act(b_obs[idx], b_act[idx])
                ratio = (logp - b_logp[idx]).exp()
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()
                v_clipped = b_val[idx] + (value - b_val[idx]).clamp(-clip, clip)
                v_loss = 0.5 * torch.max((value - b_ret[idx]) ** 2, (v_clipped - b_ret[idx]) ** 2).mean()
                loss = pg_loss - ent_coef * entropy.mean() + vf_coef * v_loss
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                opt.step()
        times["update"] += time.time() - t
        if global_step % eval_every_steps == 0:
            t = time.time()
            ret_eval = greedy_eval(agent.actor, seed)
            times["evaluate"] += time.time() - t
            curve.append((global_step, round(ret_eval, 1)))
            if ret_eval >= SOLVED_RETURN and solved_at is None:
                solved_at, t_solve, eval_to_solve = global_step, time.time(), times["evaluate"]
                if stop_when_solved:
                    break
    envs.close()
    return {
        "solved": solved_at is not None,
        "time_to_solve_s": None if t_solve is None else t_solve - t0,
        "time_to_solve_train_only_s": None if t_solve is None else t_solve - t0 - eval_to_solve,
        "env_steps_to_solve": solved_at,
        "eval_curve": curve,
        "phases_to_solve_s": {k: round(v, 2) for k, v in times.items()},
        "evals_to_solve": None if solved_at is None else solved_at // eval_every_steps,
        "run_wall_s": time.time() - t0,
    }


# ---- report ---------------------------------------------------------------------------------------
def _fmt(x: Optional[float], spec: str = "7.1f") -> str:
    return "unsolved".rjust(7) if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one seed, rlinf's recipe only")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--variants", nargs="+", choices=sorted(RLINF_VARIANTS), default=None,
                        help="rlinf runs: its recipe and/or the recipe with CleanRL's hyperparameters")
    parser.add_argument("--eval-every-steps", type=int, default=EVAL_EVERY_STEPS)
    parser.add_argument("--no-early-stop", action="store_true",
                        help="run rlinf to runner.max_steps and the baseline to 500k env steps")
    parser.add_argument("overrides", nargs="*", help="config overrides for the rlinf runs")
    args = parser.parse_args()
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    variants = args.variants or (["recipe"] if args.quick else ["recipe", "cleanrl_settings"])
    stop = not args.no_early_stop
    torch.set_num_threads(1)
    systems = [f"rlinf_{v}" for v in variants] + ["cleanrl"]
    results: Dict[str, Dict[int, Dict]] = {name: {} for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:  # alternating: rlinf variant(s), baseline, next seed ...
            for v in variants:
                results[f"rlinf_{v}"][seed] = run_rlinf(seed, Path(tmp) / f"{v}_seed{seed}", args.eval_every_steps,
                                                        RLINF_VARIANTS[v] + args.overrides, stop)
            results["cleanrl"][seed] = run_cleanrl(seed, args.eval_every_steps, stop_when_solved=stop)
    print(f"PPO {ENV_ID}: solved = greedy mean return >= {SOLVED_RETURN:g} over {EVAL_EPISODES} held-out episodes, "
          f"checked every {args.eval_every_steps} env steps")
    print(f"{'system':22s} {'seed':>4s} {'solve s':>8s} {'excl startup':>12s} {'excl eval':>9s} {'env steps':>9s} "
          f"{'evals':>5s}  phases until solved (s)")
    for name, per_seed in results.items():
        for seed, r in per_seed.items():
            print(f"{name:22s} {seed:4d} {_fmt(r['time_to_solve_s'], '8.1f')} "
                  f"{_fmt(r.get('time_to_solve_excl_startup_s', r['time_to_solve_s']), '12.1f')} "
                  f"{_fmt(r['time_to_solve_train_only_s'], '9.1f')} {str(r['env_steps_to_solve']):>9s} "
                  f"{str(r['evals_to_solve']):>5s}  {r['phases_to_solve_s']}")
            print(f"{'':28s}eval curve (env steps, return): {r['eval_curve']}")
            if r.get("worker_busy_s"):
                print(f"{'':28s}worker busy, whole run (s): {r['worker_busy_s']}")
    keys = ("time_to_solve_s", "time_to_solve_excl_startup_s", "time_to_solve_train_only_s", "env_steps_to_solve")
    med = {name: {k: _median([r.get(k, r["time_to_solve_s"] if k.endswith("startup_s") else None)
                              for r in per_seed.values()]) for k in keys}
           for name, per_seed in results.items()}
    cr = med["cleanrl"]["time_to_solve_s"]

    def ratio(name: str, key: str) -> Optional[float]:
        x = med.get(name, {}).get(key)
        return None if x is None or cr is None else x / cr

    print(f"median time to solve: CleanRL-style {_fmt(cr)} s")
    for name in systems[:-1]:
        m = med[name]
        print(f"  {name}: {_fmt(m['time_to_solve_s'])} s (excl. start-up {_fmt(m['time_to_solve_excl_startup_s'])} s); "
              f"ratio to CleanRL {_fmt(ratio(name, 'time_to_solve_s'), '.2f')} (goal <= 1.0), "
              f"excl. rlinf start-up {_fmt(ratio(name, 'time_to_solve_excl_startup_s'), '.2f')}")
    head = "rlinf_recipe" if "rlinf_recipe" in med else systems[0]
    result = {
        "seeds": seeds, "eval_every_steps": args.eval_every_steps, "solved_return": SOLVED_RETURN,
        "eval_episodes": EVAL_EPISODES, "headline": head,
        "rlinf_time_to_solve_s": med[head]["time_to_solve_s"], "cleanrl_time_to_solve_s": cr,
        "ratio": ratio(head, "time_to_solve_s"),
        "rlinf_time_to_solve_excl_startup_s": med[head]["time_to_solve_excl_startup_s"],
        "ratio_excl_startup": ratio(head, "time_to_solve_excl_startup_s"),
        "solved": {name: {str(s): r["solved"] for s, r in per_seed.items()} for name, per_seed in results.items()},
        "median": med,
        "ratios": {name: {"ratio": ratio(name, "time_to_solve_s"),
                          "ratio_excl_startup": ratio(name, "time_to_solve_excl_startup_s")} for name in systems[:-1]},
        "rlinf_startup_s": {name: statistics.median(r["startup_s"] for r in results[name].values())
                            for name in systems[:-1]},
        "per_seed": {name: {str(s): {k: v for k, v in r.items() if k != "eval_curve"} for s, r in per_seed.items()}
                     for name, per_seed in results.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
