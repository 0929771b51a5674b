"""Shared test set-up.

``require(ok, why)`` is how a test says it needs a real dependency (a browser,
torchvision, ...): outside CI the test is skipped with the reason; in CI
(``CI=true``) it fails, so a missing dependency can never pass silently.
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, why: str) -> None:
    """Skip (locally) or fail (in CI) when a real dependency is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required dependency missing in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(0)
    return 0


def hook_count(model) -> int:
    """How many forward hooks, forward pre-hooks and backward hooks are installed on ``model``'s modules
    (the one helper for every hook-leak check; see tests/test_hook_removal.py)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
