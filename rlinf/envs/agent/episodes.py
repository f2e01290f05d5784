"""The multi-turn episode driver: the piece an env worker group calls to roll out a batch of text / tool
episodes with the policy, producing `Trajectory` records (`rlinf.workflows.multiturn.build_multiturn_rows`
turns them into training rows). The Ray env-group wiring and the workflow registration are not here.

    trajectories = run_episodes(envs, samples, generate, encode, decode, schedule="per_trajectory")

- `envs[i]` (a `ToolEnv`) plays `samples[i]`; `group_indices[i]` groups samples of one prompt.
- `generate(contexts) -> (tokens, logprobs)`: one model turn for each context (a list of token ids), its
  behaviour log-probs one per token; it should stop at `STOP_STRINGS` or EOS (the transformers engine's
  `RolloutWorker.generate` / `sample`, vLLM with stop strings, or a stub in tests). Whatever follows the
  first stop string is cut here (tokens and log-probs alike), so an engine without stop strings works too.
  It is called only from the calling thread (in production a Ray call to a rollout worker).
- `encode(text) -> ids` / `decode(ids) -> text`: the policy tokenizer (no special tokens added).
- `render_prompt(messages) -> ids`: the initial context, e.g.
  `lambda m: tok.apply_chat_template(m, add_generation_prompt=True)`; the default encodes the message
  contents joined by blank lines.

Schedules (`schedule=`). Env steps (which run the tools) always run in a thread pool of `tool_workers`
threads; `generate` runs in the calling thread.

- `lockstep`: rounds. Every unfinished episode generates its next turn (one `generate` call, or chunks
  of `max_batch`), then every env steps (concurrently when `tool_workers > 1`; one after another with
  `tool_workers=1`), and the next round waits for the slowest step. The baseline.
- `per_trajectory`: no rounds. Whichever episodes are ready (their last observation appended) join the
  next `generate` call (at most `max_batch` of them, the longest-waiting first), each generated turn is
  handed to the pool at once, and when nothing is ready the driver waits for the first step to finish.
  A slow tool delays only its own episode (continuous batching at turn granularity).

For a policy whose turn depends only on its context both schedules produce identical trajectories; with
a sampling policy the batches differ, so the random draws do. Every wait has a deadline: a step that runs
longer than `timeout_s` raises `TimeoutError` naming the trajectory (its thread cannot be killed and
finishes on its own; tools carry their own limits, this is the backstop). An exception raised by
`env.step` propagates unchanged (tool failures are not exceptions: they come back as observations).

Rewards: the verifier's grade on an answer turn is the trajectory's outcome reward; any other step reward
(a malformed-call penalty) is the per-turn reward of that model segment. The observation of a non-final
step is appended as an env segment; a finished episode appends nothing. `Trajectory.info` holds `turns`,
`tool_calls` (tool and malformed turns), `tool_seconds` (the tools' summed elapsed seconds), `tool_errors`
(malformed calls and failed tool runs), `reason` and `truncated`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from rlinf.envs.agent.tool_env import STOP_STRINGS, Messages, ToolEnv
from rlinf.envs.agent.trajectory import Segment, Trajectory

logger = logging.getLogger(__name__)

Generate = Callable[[List[List[int]]], Tuple[List[List[int]], List[List[float]]]]
Encode = Callable[[str], List[int]]
Decode = Callable[[List[int]], str]
StepResult = Tuple[str, float, bool, Dict[str, Any]]

SCHEDULES = ("lockstep", "per_trajectory")


def cut_at_stop(tokens: List[int], logprobs: List[float], decode: Decode,
                stops: Sequence[str] = STOP_STRINGS) -> Tuple[List[int], List[float]]:
    """The shortest prefix of `tokens` whose text contains a stop string (all tokens if none does)."""
    if not any(s in decode(tokens) for s in stops):
        return list(tokens), list(logprobs)
    for k in range(1, len(tokens) + 1):
        if any(s in decode(tokens[:k]) for s in stops):
            return list(tokens[:k]), list(logprobs[:k])
    return list(tokens), list(logprobs)


@dataclass
class _Turn:
    """One generated turn of trajectory `index` (cut at the stop string) whose env step is queued or
    running; `started` is set by the pool thread when the step begins (None while queued)."""

    index: int
    token_ids: List[int]
    logprobs: List[float]
    started: Optional[float] = None


class _Episodes:
    """The state of one `run_episodes` call: envs, records, contexts, the pool and the knobs."""

    def __init__(self, envs, trajectories, generate, encode, decode, pool, max_batch, timeout_s):
        self.envs, self.trajectories = envs, trajectories
        self.contexts = [list(t.prompt_ids) for t in trajectories]
        self.generate, self.encode, self.decode = generate, encode, decode
        self.pool, self.max_batch, self.timeout_s = pool, max_batch, timeout_s
        self.running: Dict[Future, _Turn] = {}

    def generate_turns(self, indices: List[int]) -> List[_Turn]:
        """One `generate` call per chunk of `max_batch` of `indices`; turns cut at the stop strings."""
        chunk = self.max_batch or len(indices)
        turns = []
        for start in range(0, len(indices), chunk):
            batch = indices[start:start + chunk]
            tokens, logprobs = self.generate([self.contexts[i] for i in batch])
            if len(tokens) != len(batch) or len(logprobs) != len(batch):
                raise ValueError(f"generate returned {len(tokens)} turns / {len(logprobs)} log-prob lists "
                                 f"for {len(batch)} contexts")
            for i, ids, logp in zip(batch, tokens, logprobs):
                turns.append(_Turn(i, *cut_at_stop(ids, logp, self.decode)))
        return turns

    def submit(self, turn: _Turn) -> None:
        """Hand `turn` to the pool for its env step."""
        env, text = self.envs[turn.index], self.decode(turn.token_ids)

        def step() -> StepResult:
            turn.started = time.monotonic()
            return env.step(text)

        self.running[self.pool.submit(step)] = turn

    def collect(self, block: bool, return_when: str = FIRST_COMPLETED) -> List[Tuple[_Turn, StepResult]]:
        """Finished steps (in trajectory order), removed from `running`: waits up to the earliest step
        deadline when `block` (else only polls). Re-raises a step's exception; TimeoutError for a step
        past `timeout_s`."""
        timeout = self._time_to_deadline() if block else 0.0
        done, _ = wait(list(self.running), timeout=timeout, return_when=return_when)
        finished = []
        for fut in sorted(done, key=lambda f: self.running[f].index):
            turn = self.running.pop(fut)
            finished.append((turn, fut.result(timeout=0)))  # done: never waits; a step's exception propagates here
        self._check_deadlines()
        return finished

    def _time_to_deadline(self) -> float:
        started = [t.started for t in self.running.values() if t.started is not None]
        if not started:
            return self.timeout_s
        return max(0.0, min(started) + self.timeout_s - time.monotonic()) + 1e-3

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        late = sorted(t.index for t in self.running.values() if t.started is not None
                      and now - t.started > self.timeout_s)
        if late:
            i = late[0]
            prompt = str(getattr(getattr(self.envs[i], "sample", None), "prompt", ""))[:80]
            raise TimeoutError(f"env step of trajectory {i} (turn {len(self.trajectories[i].segments) // 2 + 1}, "
                               f"prompt {prompt!r}) ran longer than timeout_s={self.timeout_s} s; "
                               f"trajectories past the limit: {late}")

    def apply(self, turn: _Turn, result: StepResult) -> bool:
        """Extend the record and context of `turn.index` by the turn and its step; True when it ended."""
        traj, context = self.trajectories[turn.index], self.contexts[turn.index]
        observation, reward, done, info = result
        outcome = reward if info.get("reason") == "answer" else 0.0
        traj.segments.append(Segment.model(turn.token_ids, turn.logprobs, reward=reward - outcome))
        context.extend(turn.token_ids)
        traj.info["turns"] = info["turn"]
        traj.info["tool_calls"] += int(info["kind"] in ("tool", "malformed"))
        traj.info["tool_seconds"] += float(info.get("tool_elapsed") or 0.0)
        traj.info["tool_errors"] += int(info["kind"] == "malformed" or (info["kind"] == "tool" and not info["tool_ok"]))
        if done:
            traj.reward = outcome
            traj.info.update(reason=info["reason"], truncated=info["truncated"])
            return True
        obs_ids = list(self.encode(observation))
        traj.segments.append(Segment.env(obs_ids))
        context.extend(obs_ids)
        return False


def run_episodes(envs: Sequence[ToolEnv], samples: Sequence, generate: Generate, encode: Encode, decode: Decode,
                 render_prompt: Optional[Callable[[Messages], List[int]]] = None,
                 group_indices: Optional[Sequence[int]] = None, *, schedule: str = "lockstep",
                 tool_workers: int = 8, max_batch: Optional[int] = None,
                 timeout_s: float = 600.0) -> List[Trajectory]:
    """Play one episode per (env, sample) to its end; returns one Trajectory each, in input order.

    `schedule`: "lockstep" (rounds) or "per_trajectory" (continuous batching of ready episodes);
    `tool_workers`: threads running env steps; `max_batch`: most contexts per `generate` call (None: no
    cap); `timeout_s`: longest one env step may run. Module docstring for the details."""
    if len(envs) != len(samples):
        raise ValueError(f"{len(envs)} envs for {len(samples)} samples")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if tool_workers < 1 or (max_batch is not None and max_batch < 1) or not timeout_s > 0:
        raise ValueError(f"need tool_workers >= 1, max_batch None or >= 1 and timeout_s > 0; got "
                         f"{tool_workers}, {max_batch}, {timeout_s}")
    trajectories = _reset_all(envs, samples, encode, render_prompt, group_indices)
    with _step_pool(tool_workers) as pool:
        state = _Episodes(envs, trajectories, generate, encode, decode, pool, max_batch, timeout_s)
        (_run_lockstep if schedule == "lockstep" else _run_per_trajectory)(state)
    return trajectories


def _reset_all(envs, samples, encode, render_prompt, group_indices) -> List[Trajectory]:
    """Reset every env on its sample: the empty records, prompts rendered."""
    render = render_prompt or (lambda messages: encode("\n\n".join(m["content"] for m in messages)))
    groups = list(group_indices) if group_indices is not None else list(range(len(samples)))
    trajectories = []
    for env, sample, group in zip(envs, samples, groups):
        prompt_ids = list(render(env.reset(sample)))
        trajectories.append(Trajectory(prompt_ids, [], 0.0, group, {"turns": 0, "tool_calls": 0, "tool_seconds": 0.0,
                                                                     "tool_errors": 0}))
    return trajectories


@contextlib.contextmanager
def _step_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool for env steps: joined on a normal exit; on an error, queued steps are cancelled and
    running ones are left to finish without waiting for them."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="env-step")
    clean = False
    try:
        yield pool
        clean = True
    finally:
        pool.shutdown(wait=clean, cancel_futures=True)


def _run_lockstep(state: _Episodes) -> None:
    """Rounds: generate a turn for every unfinished episode, step them all, wait for every step."""
    active = list(range(len(state.envs)))
    while active:
        for turn in state.generate_turns(active):
            state.submit(turn)
        results = []
        while state.running:
            results.extend(state.collect(block=True, return_when=FIRST_EXCEPTION))
        ended = {turn.index for turn, result in results if state.apply(turn, result)}
        active = [i for i in active if i not in ended]


def _run_per_trajectory(state: _Episodes) -> None:
    """Continuous batching: generate for whichever episodes are ready, step each turn as soon as it is
    generated, wait for the first finished step only when none is ready."""
    ready = collections.deque(range(len(state.envs)))
    generate_calls = 0
    while ready or state.running:
        if ready:
            n = len(ready) if state.max_batch is None else min(len(ready), state.max_batch)
            batch = [ready.popleft() for _ in range(n)]
            for turn in state.generate_turns(batch):
                state.submit(turn)
            generate_calls += 1
        for turn, result in state.collect(block=not ready):
            if not state.apply(turn, result):
                ready.append(turn.index)
    logger.debug("per-trajectory schedule: %d episodes in %d generate calls", len(state.envs), generate_calls)
