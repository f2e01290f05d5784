"""Checkpoint layouts: the first differing tensor is named; optimizer state is checked per parameter."""

import torch

from rlinf.utils.checkpoint_layout import first_mismatch, layout_of, optimizer_mismatch, torch_file_layout


def test_layout_flattens_nested_state_like_dcp():
    state = {"model": {"w": torch.zeros(2, 3)}, "optim": {"state": {"w": {"exp_avg": torch.zeros(2, 3),
                                                                        "step": torch.tensor(1.0)}},
                                                          "param_groups": [{"lr": 0.1}]}}
    assert layout_of(state) == {"model.w": ((2, 3), "float32"), "optim.state.w.exp_avg": ((2, 3), "float32"),
                                "optim.state.w.step": ((), "float32")}


def test_first_mismatch_names_the_first_differing_tensor():
    a = {"b": ((2,), "float32"), "c": ((3,), "float32")}
    assert first_mismatch(a, dict(a)) is None
    assert first_mismatch(a, {**a, "c": ((4,), "float32")}) == (
        "tensor 'c': checkpoint has shape [4] float32, this config builds [3] float32")
    assert first_mismatch(a, {**a, "b": ((2,), "bfloat16")}).startswith("tensor 'b'")
    assert first_mismatch(a, {"c": a["c"]}) == "tensor 'b' missing from the checkpoint"
    assert first_mismatch(a, {**a, "a": ((1,), "float32")}) == (
        "checkpoint tensor 'a' is not in the model this config builds")


def test_optimizer_state_of_another_shape_is_named(tmp_path):
    small, big = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
    opt_small = torch.optim.Adam(small.parameters())
    small(torch.ones(1, 2)).sum().backward()
    opt_small.step()
    saved = opt_small.state_dict()
    assert optimizer_mismatch(torch.optim.Adam(torch.nn.Linear(2, 2).parameters()), saved) is None
    msg = optimizer_mismatch(torch.optim.Adam(big.parameters()), saved)
    assert msg.startswith("optimizer state 'exp_avg' of parameter 0: checkpoint has shape [2, 2]")
    assert optimizer_mismatch(torch.optim.Adam([big.weight]), saved) == (
        "optimizer state holds 2 parameters, this config builds 1")
    torch.save(small.state_dict(), tmp_path / "model.pt")
    assert torch_file_layout(tmp_path / "model.pt") == layout_of(small.state_dict())
