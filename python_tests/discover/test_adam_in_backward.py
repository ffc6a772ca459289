"""InBackwardAdam: Adam's update, parameter by parameter inside the backward pass."""

from __future__ import annotations

import pytest
import torch

from navcuda.discover.adam_in_backward import InBackwardAdam


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3), torch.nn.Tanh()
    ).double()


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
    return model(x).pow(2).sum()


def _train(model, opt, steps, start=0, in_backward=True):
    for i in range(start, start + steps):
        opt.zero_grad()
        if in_backward:
            with opt.updating():
                _loss(model, i).backward()
        else:
            _loss(model, i).backward()
            opt.step()


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    # float64 throughout: the fused and the for-loop kernels differ only by rounding (~1e-16).
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("in_backward", [True, False])
def test_same_parameters_as_torch_adam(in_backward):
    ours, theirs = _model(), _model()
    opt = InBackwardAdam(ours.parameters(), lr=1e-2)
    _train(ours, opt, 5, in_backward=in_backward)
    _train(theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2), 5, in_backward=False)
    _assert_same(ours, theirs)
    assert all((p.grad is None) == in_backward for p in ours.parameters())


def test_hooks_idle_outside_the_context():
    model = _model()
    opt = InBackwardAdam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    _loss(model, 0).backward()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(RuntimeError, match="boom"), opt.updating():
        raise RuntimeError("boom")
    assert not opt._active


def test_unreached_parameter_keeps_its_state():
    model = _model()
    opt = InBackwardAdam(model.parameters(), lr=1e-2)
    head = list(model.parameters())[-1]
    frozen = head.detach().clone()
    with opt.updating():
        model[0](torch.ones(1, 5, dtype=torch.float64)).sum().backward()
    assert torch.equal(head, frozen)
    assert 3 not in opt.state_dict()["state"] and 0 in opt.state_dict()["state"]


@pytest.mark.parametrize("direction", ["to_torch", "from_torch"])
def test_state_dict_moves_between_torch_adam_and_ours(direction):
    """A checkpoint written by either optimiser resumes in the other: same trajectory."""
    a, b, straight = _model(), _model(), _model()
    _train(straight, torch.optim.Adam(straight.parameters(), lr=1e-2), 6, in_backward=False)
    if direction == "to_torch":
        first = InBackwardAdam(a.parameters(), lr=1e-2)
        _train(a, first, 3)
        b.load_state_dict(a.state_dict())
        second = torch.optim.Adam(b.parameters(), lr=1.0)  # lr comes from the state
        second.load_state_dict(first.state_dict())
        _train(b, second, 3, start=3, in_backward=False)
    else:
        first = torch.optim.Adam(a.parameters(), lr=1e-2)
        _train(a, first, 3, in_backward=False)
        b.load_state_dict(a.state_dict())
        second = InBackwardAdam(b.parameters(), lr=1.0)
        second.load_state_dict(first.state_dict())
        _train(b, second, 3, start=3)
    _assert_same(b, straight)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        InBackwardAdam([], lr=1e-3)
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="twice"):
        InBackwardAdam([p, p], lr=1e-3)
    opt = InBackwardAdam([p], lr=1e-3)
    with pytest.raises(ValueError, match="single parameter group"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3)) for _ in range(2)], lr=1e-3)
    with pytest.raises(ValueError, match="has 2 parameters, this one 1"):
        opt.load_state_dict(other.state_dict())
    wrong = torch.nn.Parameter(torch.zeros(4))
    w_opt = torch.optim.Adam([wrong], lr=1e-3)
    wrong.sum().backward()
    w_opt.step()
    with pytest.raises(ValueError, match=r"state \[4\] does not fit a parameter of shape \[3\]"):
        opt.load_state_dict(w_opt.state_dict())
