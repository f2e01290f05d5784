"""run_episodes schedules: per-trajectory continuous batching against the lock-step baseline. A
deterministic stub policy (its turn depends only on its context) must give identical trajectories under
both; a blocked tool must not hold up the other episodes (checked with events, not wall-clock times);
step errors propagate, step time-outs name the trajectory, generate stays on the calling thread."""

import random
import threading
import time

import pytest

from rlinf.envs.agent import ToolEnv
from rlinf.envs.agent import tool_env as tool_env_module
from rlinf.envs.text import TextSample
from rlinf.tools import ToolResult
from rlinf.envs.agent.episodes import run_episodes
from tests.unit.test_agent_episodes import decode, encode, exact, stub_generate

EXPRESSIONS = ["12*34", "1/0", "7+8", "2**10", "99-1", "6/4"]


class JitterEnv(ToolEnv):
    """A ToolEnv whose steps take a few seeded-random milliseconds, so steps finish out of order."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(exact, system_prompt=None, **kwargs)
        self.rng = random.Random(seed)

    def step(self, model_turn):
        time.sleep(self.rng.uniform(0.0, 0.01))
        return super().step(model_turn)


class Latch:
    """Sets `event` once `count_down` has been called `n` times (from any thread)."""

    def __init__(self, n: int, event: threading.Event):
        self.n, self.event, self.lock = n, event, threading.Lock()

    def count_down(self):
        with self.lock:
            self.n -= 1
            if self.n == 0:
                self.event.set()


class GatedEnv(ToolEnv):
    """Its first step is a slow tool: it blocks until `gate` is set (at most `wait_s`); `released` records
    whether the gate opened. Other envs of the test count down `latch` when their episode ends."""

    def __init__(self, gate=None, latch=None, wait_s=5.0, fail_on_turn=None, **kwargs):
        super().__init__(exact, system_prompt=None, **kwargs)
        self.gate, self.latch, self.wait_s, self.fail_on_turn = gate, latch, wait_s, fail_on_turn
        self.released = None

    def step(self, model_turn):
        if self.fail_on_turn == self.turn + 1:
            raise RuntimeError(f"env broke on turn {self.turn + 1}")
        if self.gate is not None and self.turn == 0:
            self.released = self.gate.wait(timeout=self.wait_s)
        out = super().step(model_turn)
        if out[2] and self.latch is not None:
            self.latch.count_down()
        return out


def samples_for(expressions):
    return [TextSample(f"What is {e}?", "408") for e in expressions]


def comparable(trajectories):
    """Everything of the records except the measured tool seconds."""
    return [(t.prompt_ids, [(s.token_ids, s.is_model, s.logprobs, s.reward) for s in t.segments], t.reward,
             t.group_index, {k: v for k, v in t.info.items() if k != "tool_seconds"}) for t in trajectories]


def jitter_episodes(**knobs):
    envs = [JitterEnv(i) for i in range(len(EXPRESSIONS))]
    envs.append(JitterEnv(99, max_turns=3, malformed_call_reward=-0.1))
    samples = samples_for(EXPRESSIONS) + [TextSample("loop forever", "0")]
    return run(envs, samples, **knobs)


def run(envs, samples, generate=stub_generate, **knobs):
    return run_episodes(envs, samples, generate, encode, decode, group_indices=[i // 2 for i in range(len(envs))],
                        **knobs)


def test_schedules_give_identical_trajectories_for_a_deterministic_policy():
    baseline = comparable(jitter_episodes(schedule="lockstep", tool_workers=1))
    assert [info["reason"] for *_, info in baseline] == ["answer"] * len(EXPRESSIONS) + ["max_turns"]
    for knobs in [dict(schedule="lockstep", tool_workers=4, max_batch=3),
                  dict(schedule="per_trajectory", tool_workers=4),
                  dict(schedule="per_trajectory", tool_workers=2, max_batch=2),
                  dict(schedule="per_trajectory", tool_workers=1, max_batch=1)]:
        assert comparable(jitter_episodes(**knobs)) == baseline, knobs


def test_every_trajectory_returned_once_in_input_order_and_generate_batches_capped():
    calls, threads = [], set()

    def generate(contexts):
        calls.append(len(contexts))
        threads.add(threading.get_ident())
        return stub_generate(contexts)

    envs = [JitterEnv(i) for i in range(len(EXPRESSIONS))]
    out = run(envs, samples_for(EXPRESSIONS), generate=generate, schedule="per_trajectory", max_batch=2)
    assert len(out) == len(EXPRESSIONS) and len({id(t) for t in out}) == len(out)
    assert [decode(t.prompt_ids) for t in out] == [f"What is {e}?" for e in EXPRESSIONS]
    assert [decode(t.segments[0].token_ids) for t in out] == [
        f'<tool_call>{{"name": "calculator", "input": "{e}"}}</tool_call>' for e in EXPRESSIONS]
    assert max(calls) <= 2 and sum(calls) == 2 * len(EXPRESSIONS)  # two turns each
    assert threads == {threading.get_ident()}  # generate only on the calling thread


def test_slow_tool_does_not_stall_the_other_trajectories():
    gate = threading.Event()
    others = len(EXPRESSIONS) - 1
    latch = Latch(others, gate)  # the gate opens only once every other episode has ended
    slow = GatedEnv(gate)
    envs = [slow] + [GatedEnv(latch=latch) for _ in range(others)]
    out = run(envs, samples_for(EXPRESSIONS), schedule="per_trajectory", tool_workers=2)
    assert slow.released is True  # the others finished all their turns while the slow tool was blocked
    assert [t.info["reason"] for t in out] == ["answer"] * len(EXPRESSIONS)
    assert decode(out[0].segments[-1].token_ids) == "<answer>408</answer>"


def test_lockstep_does_stall_on_the_slow_tool():
    """The contrast: in rounds, nobody's second turn starts before the slow step ends."""
    gate = threading.Event()
    latch = Latch(2, gate)
    slow = GatedEnv(gate, wait_s=0.3)
    out = run([slow, GatedEnv(latch=latch), GatedEnv(latch=latch)], samples_for(EXPRESSIONS[:3]),
              schedule="lockstep", tool_workers=3)
    assert slow.released is False
    assert [t.info["reason"] for t in out] == ["answer"] * 3


def test_tool_errors_stay_observations():
    out = run([JitterEnv(0)], samples_for(["1/0"]), schedule="per_trajectory")
    assert [decode(s.token_ids) for s in out[0].segments] == [
        '<tool_call>{"name": "calculator", "input": "1/0"}</tool_call>',
        "\n<tool_result>error: division by zero</tool_result>\n", "<answer>error: division by zero</answer>"]
    assert (out[0].reward, out[0].info["tool_calls"], out[0].info["reason"]) == (0.0, 1, "answer")


def test_info_sums_tool_seconds(monkeypatch):
    monkeypatch.setattr(tool_env_module, "call_tool", lambda name, text, **kw: ToolResult(True, "408", elapsed=0.25))
    envs = [JitterEnv(0), JitterEnv(1), JitterEnv(2, max_turns=3)]
    samples = samples_for(["12*34", "12*34"]) + [TextSample("loop forever", "0")]
    for schedule in ("lockstep", "per_trajectory"):
        out = run(envs, samples, schedule=schedule)
        assert [t.info["tool_seconds"] for t in out] == [0.25, 0.25, 0.0]  # malformed calls run no tool
        assert [(t.info["turns"], t.info["tool_calls"]) for t in out] == [(2, 1), (2, 1), (3, 3)]


@pytest.mark.parametrize("schedule", ["lockstep", "per_trajectory"])
def test_step_exceptions_propagate(schedule):
    envs = [GatedEnv(), GatedEnv(fail_on_turn=2), GatedEnv()]
    with pytest.raises(RuntimeError, match="env broke on turn 2"):
        run(envs, samples_for(EXPRESSIONS[:3]), schedule=schedule)


@pytest.mark.parametrize("schedule", ["lockstep", "per_trajectory"])
def test_a_step_past_the_timeout_names_its_trajectory(schedule):
    gate = threading.Event()
    try:
        with pytest.raises(TimeoutError, match=r"trajectory 1 \(turn 1, prompt 'What is 1/0\?'\)"):
            run([GatedEnv(), GatedEnv(gate)], samples_for(EXPRESSIONS[:2]), schedule=schedule, timeout_s=0.2)
    finally:
        gate.set()  # let the blocked pool thread finish


def test_bad_arguments_and_bad_generate_are_refused():
    envs, samples = [GatedEnv()], samples_for(["7+8"])
    with pytest.raises(ValueError, match="unknown schedule"):
        run(envs, samples, schedule="async")
    with pytest.raises(ValueError, match="tool_workers"):
        run(envs, samples, tool_workers=0)
    with pytest.raises(ValueError, match="generate returned 0 turns"):
        run(envs, samples, generate=lambda contexts: ([], []), schedule="per_trajectory")
