"""Training of WaGI encoders and fusion modules (``scripts/train.py``)."""
from .common import TrainingStopped
from .trainer import Trainer

__all__ = ["Trainer", "TrainingStopped"]
