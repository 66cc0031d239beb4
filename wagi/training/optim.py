"""Optimisers and schedules for WaGI training.

``ranger`` = RAdam (``torch.optim.RAdam``) wrapped in Lookahead (k=6, α=0.5), the optimiser of the pSp
family. Lookahead is a few lines, so it is written here rather than pulled from an unmaintained package;
its slow weights and step counter are part of ``state_dict`` so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import torch

LOOKAHEAD_K = 6        # fast steps between slow-weight syncs (Ranger's default)
LOOKAHEAD_ALPHA = 0.5  # slow-weight interpolation factor


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around an inner optimiser: every ``k`` steps
    ``slow ← slow + α (fast − slow)`` and ``fast ← slow``."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = LOOKAHEAD_K, alpha: float = LOOKAHEAD_ALPHA):
        self.inner = inner
        self.k, self.alpha = k, alpha
        self.param_groups = inner.param_groups
        self.defaults = inner.defaults
        self.state = inner.state
        self._count = 0
        self._slow: List[torch.Tensor] = [p.detach().clone() for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.inner.step(closure)
        self._count += 1
        if self._count % self.k == 0:
            params = [p for g in self.param_groups for p in g["params"]]
            for p, slow in zip(params, self._slow):
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict:
        return {"inner": self.inner.state_dict(), "count": self._count, "slow": [s.clone() for s in self._slow]}

    def load_state_dict(self, state: Dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.param_groups = self.inner.param_groups
        self.state = self.inner.state
        self._count = int(state["count"])
        for s, v in zip(self._slow, state["slow"]):
            s.copy_(v)


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, betas=(0.9, 0.999),
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "ranger":
        return Lookahead(torch.optim.RAdam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay))
    raise ValueError(f"unknown optimizer {name!r} (adam, ranger)")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, max_steps: int):
    target = optimizer.inner if isinstance(optimizer, Lookahead) else optimizer
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(target, lambda step: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            target, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max(max_steps, 1))))
    raise ValueError(f"unknown scheduler {name!r} (constant, cosine)")


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler, lr: float, betas, weight_decay: float
                          ) -> List[str]:
    """Make a resumed optimiser follow the config: a loaded state carries the saved run's lr (the scheduler's
    base lr), betas and weight decay, and the lr its schedule gave at the saved step (stale when the config's
    schedule differs, e.g. a cosine over a longer ``max_steps``: it was 0 at the old end). The current lr becomes
    ``lr × schedule(step)`` of this config. Returns a line per change (empty when the config is the saved run's,
    so an unchanged resume stays exact)."""
    target = optimizer.inner if isinstance(optimizer, Lookahead) else optimizer
    changes = []
    for i, group in enumerate(target.param_groups):
        if scheduler.base_lrs[i] != lr:
            changes.append(f"lr {scheduler.base_lrs[i]:.6g} -> {lr:.6g}")
            scheduler.base_lrs[i] = lr
            group["initial_lr"] = lr
        current = lr * scheduler.lr_lambdas[i](scheduler.last_epoch)
        if group["lr"] != current:
            changes.append(f"lr at step {scheduler.last_epoch} {group['lr']:.6g} -> {current:.6g} (schedule)")
            group["lr"] = current
        if tuple(group["betas"]) != tuple(betas):
            changes.append(f"betas {tuple(group['betas'])} -> {tuple(betas)}")
            group["betas"] = tuple(betas)
        if group["weight_decay"] != weight_decay:
            changes.append(f"weight decay {group['weight_decay']:.6g} -> {weight_decay:.6g}")
            group["weight_decay"] = weight_decay
    return changes


def state_mismatch(optimizer: torch.optim.Optimizer) -> Optional[str]:
    """After ``load_state_dict``: the first parameter whose loaded state (Adam moments, Lookahead's slow
    weights) has another shape, as one line, or None. Optimiser states are matched to parameters by position,
    so a model whose parameters were reordered or resized would otherwise fail inside the first step."""
    target = optimizer.inner if isinstance(optimizer, Lookahead) else optimizer
    params = [p for g in target.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for key, value in target.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                return (f"optimiser state {key!r} of parameter {i} has shape {tuple(value.shape)}, the parameter "
                        f"{tuple(p.shape)}: the checkpoint's parameters are in another order or of other sizes")
    if isinstance(optimizer, Lookahead):
        for i, (slow, p) in enumerate(zip(optimizer._slow, params)):
            if slow.shape != p.shape:
                return (f"Lookahead slow weights of parameter {i} have shape {tuple(slow.shape)}, the parameter "
                        f"{tuple(p.shape)}")
    return None

