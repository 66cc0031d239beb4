"""Seed ranges of the procedural demo domain (:mod:`wagi.data.demo_faces`), defined once.

Training faces are the seeds ``[0, TRAIN_SEED_END)``; seeds from ``TEST_SEED_OFFSET`` on are never
trained on (validation during training, evaluation sets, example images: ``docs/demo_domain.md``,
"Seed conventions"). A module of its own, without imports, so that the renderer, the dataset registry
(:mod:`wagi.datasets`) and the config schemas share it without importing one another.
"""

TRAIN_SEED_END = 1_000_000  # training seeds are [0, TRAIN_SEED_END)
TEST_SEED_OFFSET = TRAIN_SEED_END  # never-trained seeds start here: disjoint from training

__all__ = ["TRAIN_SEED_END", "TEST_SEED_OFFSET"]
