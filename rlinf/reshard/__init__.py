"""Resharding engine: plans and transports that move weights from the training layout (FSDP2 shards
over the actor's dp ranks) to the generation layout (rollout replicas, full or tensor-parallel).

    plan = plan_for_module(model, SourceLayout(dp_size), TargetLayout(num_replicas, tp_size))
    # rollout rank:  target = ReshardTarget(plan, self, "actor", colocated=...); handle = target.handle()
    # actor rank:    source = ReshardSource(plan, self, "rollout", bucket_mb); source.attach(handles)
    # every sync (controller starts both at once, then `wait_all`):
    #   actor rank:   source.send({name: param}, version)      rollout rank: target.recv(version)
"""

from rlinf.reshard.bind import bind_module, module_tensors
from rlinf.reshard.control import wait_all
from rlinf.reshard.plan import (
    ReshardPlan,
    SourceLayout,
    Split,
    TargetLayout,
    Transfer,
    make_plan,
    plan_for_module,
    vllm_tp_split,
)
from rlinf.reshard.transport import ReshardSource, ReshardTarget

__all__ = ["bind_module", "module_tensors", "ReshardPlan", "ReshardSource", "ReshardTarget", "SourceLayout", "Split", "TargetLayout", "Transfer",
           "make_plan", "plan_for_module", "vllm_tp_split", "wait_all"]
