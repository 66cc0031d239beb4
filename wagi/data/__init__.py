"""Data for WaGI: the procedural demo domain (``demo_faces``)."""
from .demo_faces import (
    DEMO_FACES_VERSION,
    TEST_SEED_OFFSET,
    TRAIN_SEED_END,
    DemoFaceDataset,
    DemoFaceStream,
    demo_grid,
    face_tensor,
    render_face,
    render_from_attributes,
    sample_attributes,
    write_demo_dataset,
)

__all__ = [
    "DEMO_FACES_VERSION",
    "TEST_SEED_OFFSET",
    "TRAIN_SEED_END",
    "DemoFaceDataset",
    "DemoFaceStream",
    "demo_grid",
    "face_tensor",
    "render_face",
    "render_from_attributes",
    "sample_attributes",
    "write_demo_dataset",
]
