"""LIBERO vector-env throughput: env steps per second of `rlinf.envs.libero_env.LiberoVectorEnv`.

    python -m bench.libero_env [--suite libero_spatial] [--num-envs 1 2 4] [--steps 40] [--image-size 128]

For each N: build N slots (tasks 0 .. N-1 of the suite), reset, run `--steps` vector steps of uniform random
actions in [-1, 1] (no policy), and report env steps/s = N * steps / wall time of the stepping (resets at
the time limit included; builds and the first reset excluded) and the mean time of one vector step. The
load average at the start is printed with each row since the machine may be shared. Last line:
`RESULT {json}`.
"""

import argparse
import json
import logging
import os
import time

import numpy as np

from rlinf.config import load_config
from rlinf.envs import make_vector_env

logger = logging.getLogger("bench.libero_env")


def measure(suite: str, num_envs: int, steps: int, image_size: int, seed: int = 0) -> dict:
    cfg = load_config("configs/ppo_cartpole_mlp.yaml", ["env.simulator=libero", f"env.id={suite}",
                                                        f"env.image_size={image_size}"])
    t0 = time.perf_counter()
    env = make_vector_env(cfg.env, num_envs)
    build_s = time.perf_counter() - t0
    try:
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        env.reset(seed=seed)
        reset_s = time.perf_counter() - t0
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1.0, 1.0, (num_envs, 7)))
        wall = time.perf_counter() - t0
    finally:
        env.close()
    return {"suite": suite, "num_envs": num_envs, "image_size": image_size, "steps": steps,
            "env_steps_per_s": num_envs * steps / wall, "vector_step_ms": 1000 * wall / steps,
            "build_s": build_s, "reset_s": reset_s, "load_avg_1m": load}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.libero_env")
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for n in args.num_envs:
        row = measure(args.suite, n, args.steps, args.image_size)
        logger.info("N=%d: %.1f env steps/s, %.0f ms per vector step (build %.1f s, reset %.1f s, load %.1f)", n,
                    row["env_steps_per_s"], row["vector_step_ms"], row["build_s"], row["reset_s"],
                    row["load_avg_1m"])
        rows.append(row)
    logger.info("RESULT %s", json.dumps(rows))


if __name__ == "__main__":
    main()
