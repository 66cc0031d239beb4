"""The compute device of a run: ``--device`` / ``experiment.device`` (``auto``, ``cpu`` or ``cuda``) to a
:class:`torch.device`, and the one line that reports it.

Used by every script and both trainers, so that ``auto`` means the same everywhere and asking for a
CUDA device on a machine without one fails with the same one-line ``ValueError`` before any work.
"""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto", option: str = "--device") -> torch.device:
    """``'auto'`` (CUDA when available, else CPU), ``'cpu'`` or ``'cuda'``.

    Raises ``ValueError`` (one line naming ``option``, the flag or config key the name came from) for
    an unknown name, or for ``'cuda'`` when no CUDA device is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICE_CHOICES:
        raise ValueError(f"{option}: unknown device {name!r}; choose {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} cuda was asked for but no CUDA device is available")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """One line: the device (with the card's name on CUDA) and which custom-op implementation runs there."""
    what = str(device)
    if device.type == "cuda":
        what += f" ({torch.cuda.get_device_name(device)})"
    else:
        what += f" ({torch.get_num_threads()} threads)"
    try:
        from wagi.ops import active_impl

        impl = active_impl(device)
    except Exception as err:  # a broken ops install must not stop inversion on the reference path
        impl = f"unknown ({type(err).__name__}: {err})"
    return f"device {what}, ops implementation: {impl}"


__all__ = ["DEVICE_CHOICES", "resolve_device", "describe_device"]
