"""Training of WaGI encoders and fusion modules (``scripts/train.py``)."""
from .trainer import Trainer, TrainingStopped

__all__ = ["Trainer", "TrainingStopped"]
