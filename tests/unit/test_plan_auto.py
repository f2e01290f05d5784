"""`cluster.component_placement: auto`: rlinf.plan.api.expand_auto replaces it with the best plan's overrides
(profile stubbed: no runs), and leaves other configs' overrides alone."""

from pathlib import Path

import pytest
import yaml

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.plan import api
from rlinf.plan.cost_model import PhaseCost, Workload
from rlinf.plan.hardware import Hardware
from rlinf.plan.memory import MemorySpec
from rlinf.workflows import components_for

ARITH = "configs/grpo_arith.yaml"


def _auto_config(tmp_path: Path) -> str:
    data = yaml.safe_load(Path(ARITH).read_text())
    data["cluster"] = {"num_devices": 4, "component_placement": "auto"}
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _stub(monkeypatch, memory: MemorySpec) -> None:
    fake = Workload(name="w", kind="reasoning", samples_per_step=8, generate=PhaseCost(serial_s=4.0),
                    update=PhaseCost(work_s=8.0), memory=memory)
    monkeypatch.setattr(api, "profile", lambda *a, **k: fake)
    monkeypatch.setattr(api, "local_hardware", lambda d: Hardware(name="gpu", device_memory_gib=80))


def test_not_auto_is_unchanged():
    assert api.expand_auto(ARITH, ["runner.max_steps=3"]) == ["runner.max_steps=3"]
    assert not api.is_auto(ARITH, [])
    assert api.is_auto(ARITH, ["cluster.component_placement=auto"])


def test_auto_expands_to_a_valid_placement(tmp_path, monkeypatch):
    _stub(monkeypatch, MemorySpec(params=1e3, trainable=1e3))
    path = _auto_config(tmp_path)
    assert api.is_auto(path, [])
    cfg, _ = api.load_for_planning(path, [])
    assert cfg.cluster.component_placement == {}
    over = api.expand_auto(path, ["runner.max_steps=3"])
    cfg = load_config(path, over)
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    assert placement.mode == "disaggregated" and cfg.runner.schedule == "async" and cfg.runner.max_steps == 3


def test_auto_with_nothing_fitting_is_an_input_error(tmp_path, monkeypatch):
    _stub(monkeypatch, MemorySpec(params=1e12, trainable=1e12))
    with pytest.raises(InputError, match="cluster.component_placement: no plan fits"):
        api.expand_auto(_auto_config(tmp_path), [])


def test_resume_keeps_the_plan_the_run_directory_ran_with(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "profile", lambda *a, **k: pytest.fail("a resumed auto run must not profile again"))
    path = _auto_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    ran = yaml.safe_load(Path(ARITH).read_text())
    ran.update(cluster={"num_devices": 4, "component_placement": {"actor": "0-1", "rollout,reward": "2-3"}},
               rollout={"pipeline_stages": 1}, runner={"schedule": "async"}, algorithm={"max_staleness": 2})
    (run / "config.yaml").write_text(yaml.safe_dump(ran))
    later = dict(ran, runner={"schedule": "sync"}, algorithm={"max_staleness": 0})
    (run / "config.from-step-10.yaml").write_text(yaml.safe_dump(later))  # the newest config wins
    over = api.resumed_plan(path, ["runner.max_steps=3"], run)
    cfg = load_config(path, over)
    assert dict(cfg.cluster.component_placement) == {"actor": "0-1", "rollout,reward": "2-3"}
    assert (cfg.runner.schedule, cfg.algorithm.max_staleness, cfg.runner.max_steps) == ("sync", 0, 3)
    with pytest.raises(InputError, match="config.yaml"):
        api.resumed_plan(path, [], tmp_path / "empty")
