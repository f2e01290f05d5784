"""A module's weights as resharding tensors, and binding a module to a target's receive views.

`module_tensors` lists what a sync moves: parameters (as `named_parameters`, so tied weights once)
and persistent buffers (running statistics and the like), by state-dict name. `bind_module` makes a
module read its weights from given views (e.g. `ReshardTarget.tensors`), so every later sync updates
it in place without a load_state_dict.
"""

from typing import Dict, Mapping

import torch


def module_tensors(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    out = dict(module.named_parameters())
    persistent = module.state_dict(keep_vars=True)
    for name, buf in module.named_buffers():
        if name in persistent and name not in out:
            out[name] = buf
    return out


@torch.no_grad()
def bind_module(module: torch.nn.Module, views: Mapping[str, torch.Tensor]) -> None:
    """Copy the module's current weights into `views` and make the module use them."""
    params = dict(module.named_parameters())
    for name, view in views.items():
        if name in params:
            view.copy_(params[name].detach())
            params[name].data = view
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        view.copy_(getattr(owner, leaf))
        setattr(owner, leaf, view)  # nn.Module puts a tensor assigned to a buffer's name back in _buffers
