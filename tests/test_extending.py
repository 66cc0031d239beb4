"""docs/extending.md in practice: a new backbone, encoder head, fusion variant, loss term and dataset, each
registered through the public API (the decorators of their registries), selected by a config, and trained
one step with the real Trainer; each registry is left as it was."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from wagi import wavelets as wv
from wagi.config import ConfigError, load_config
from wagi.datasets import DATASETS, register_dataset
from wagi.losses import LOSS_TERMS, register_loss_term
from wagi.models.backbones import BACKBONES, BackboneFeatures, register_backbone
from wagi.models.encoders import ENCODER_HEADS, register_head
from wagi.models.fusion import FUSIONS, WAVELET_CORRECTIONS, Fusion
from wagi.models.wagi import WaGI
from wagi.tensors import resize
from wagi.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_test.yaml")
NAME = "tiny_test_dummy"  # one name for the dummy of every kind


class DummyTrunk(nn.Module):
    """Three stride-2 convs after a stride-4 stem: taps at S/4, S/8, S/16 as every backbone."""

    def __init__(self, input_nc: int, width: int = 4):
        super().__init__()
        self.input_nc = input_nc
        self.out_channels = (width, 2 * width, 4 * width)
        self.stem = nn.Conv2d(input_nc, width, 4, stride=4)
        self.down1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)

    def forward(self, x):
        c1 = F.leaky_relu(self.stem(x), 0.2)
        c2 = F.leaky_relu(self.down1(c1), 0.2)
        return BackboneFeatures(c1, c2, F.leaky_relu(self.down2(c2), 0.2))


class DummyHead(nn.Module):
    """Mean-pooled c3 → one linear map to every W+ delta."""

    def __init__(self, trunk, n_latent, image_size, style_dim, head_channels):
        super().__init__()
        self.backbone, self.n_latent, self.style_dim = trunk, n_latent, style_dim
        self.linear = nn.Linear(trunk.out_channels[-1], n_latent * style_dim)

    def forward(self, x):
        c3 = self.backbone(x).c3.mean(dim=(2, 3))
        return self.linear(c3).view(-1, self.n_latent, self.style_dim)


class DummyFusion(Fusion):
    """Scaled Haar details of the residual at the first fusion resolution."""

    injects = WAVELET_CORRECTIONS

    def __init__(self, resolution, aligner=None):
        super().__init__(aligner)
        self.resolution = resolution
        self.scale = nn.Parameter(torch.full((1, 9, 1, 1), 0.5))

    def forward(self, x, x_hat0, target=None, source_map=None):
        delta = x - x_hat0 if source_map is None else source_map
        r = self.resolution
        return {r: self.scale * wv.high_bands(wv.dwt(resize(delta, 2 * r)))}


class DummyTV(nn.Module):
    """Mean absolute difference of horizontal neighbours of the reconstruction."""

    def forward(self, x_hat):
        return (x_hat[..., 1:] - x_hat[..., :-1]).abs().mean()


class Blobs(Dataset):
    """Smooth random colour fields, one per index (seeded), (3, size, size) in [-1, 1]."""

    def __init__(self, n, size, offset):
        self.n, self.size, self.offset = n, size, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.offset + i)
        coarse = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
        return F.interpolate(coarse, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]


@pytest.fixture
def dummies():
    """Register one dummy of each kind and remove them again, whatever the test did."""
    register_backbone(NAME)(lambda input_nc: DummyTrunk(input_nc))
    register_head(NAME)(lambda trunk, **common: DummyHead(trunk, **common))
    FUSIONS.register(NAME)(lambda fc, generator, aligner: DummyFusion(fc.resolutions[0], aligner))
    register_loss_term(NAME, inputs=("x_hat",))(DummyTV)
    register_dataset(NAME)(lambda dc, split, size: Blobs(8 if split == "train" else 4, size,
                                                        0 if split == "train" else 1000))
    yield
    for registry in (BACKBONES, ENCODER_HEADS, FUSIONS, LOSS_TERMS, DATASETS):
        registry.unregister(NAME)


def _cfg(tmp_path, *overrides):
    return load_config(TINY, [f"experiment.out_dir={tmp_path}", f"encoder.kind={NAME}", f"encoder.backbone={NAME}",
                              "encoder.n_iters=1", f"fusion.kind={NAME}", "fusion.aligner.enabled=false",
                              f"loss.terms.{NAME}=0.5", f"data.kind={NAME}", "data.demo=false",
                              "train.stage=joint", "train.max_steps=1", "train.log_every=1", "train.val_every=1",
                              "train.save_every=1", "train.image_every=100", *overrides])


def test_dummy_kinds_train_a_step(tmp_path, dummies):
    cfg = _cfg(tmp_path)
    t = Trainer(cfg, progress=False)
    m = t.model
    assert isinstance(m.encoder, DummyHead) and isinstance(m.encoder.backbone, DummyTrunk)
    assert isinstance(m.fusion, DummyFusion) and not m.fusion.has_aligner
    assert isinstance(t.train_set, Blobs) and len(t.train_set) == 8 and len(t.test_set) == 4
    assert t.criterion.active_terms == ("l2", "wavelet", NAME)
    before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("encoder.", "fusion."))}
    logs = t.train()
    assert t.step == 1
    assert torch.isfinite(torch.tensor(logs["total"]))
    _, fused = t._last_batch  # the step's fused reconstruction (loss.loss_size is null: the loss saw it as is)
    assert logs[NAME] == pytest.approx(DummyTV()(fused).item(), rel=1e-5)
    assert logs[f"{NAME}_weighted"] == pytest.approx(0.5 * logs[NAME], rel=1e-6)
    assert logs["total"] == pytest.approx(logs["l2"] + logs["wavelet"] + 0.5 * logs[NAME], rel=1e-5)
    after = m.state_dict()
    for k, v in before.items():  # every parameter of the dummy head, trunk and fusion moved
        assert not torch.equal(v, after[k]), k
    record = [json.loads(line) for line in (tmp_path / "tiny_test" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in record if r["kind"] == "train"]
    assert train[0][NAME] == pytest.approx(logs[NAME], rel=1e-6)

    # The saved model rebuilds from its config through the same registries and gives the same images.
    x = torch.stack([t.test_set[i] for i in range(4)])
    loaded = WaGI.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt")
    with torch.no_grad():
        a, _, _ = m.eval().invert(x)
        b, _, _ = loaded.eval().invert(x)
    assert torch.equal(a, b)


def test_unregistered_kinds_are_config_errors(tmp_path, dummies):
    for key in ("encoder.kind", "encoder.backbone", "fusion.kind", "data.kind"):
        with pytest.raises(ConfigError, match=f"config key '{key}': must be one of .*'{NAME}'") as err:
            load_config(TINY, [f"{key}=not_registered"])
        assert "not_registered" in str(err.value)
    with pytest.raises(ConfigError, match=r"'loss.terms.l2'.*its weight is loss.l2"):
        load_config(TINY, ["loss.terms.l2=1.0"])
    with pytest.raises(ConfigError, match=rf"'loss.terms.{NAME}': must be >= 0"):
        load_config(TINY, [f"loss.terms.{NAME}=-1"])


def test_registries_are_restored_after_the_fixture(tmp_path):
    for registry in (BACKBONES, ENCODER_HEADS, FUSIONS, LOSS_TERMS, DATASETS):
        assert NAME not in registry
    with pytest.raises(ConfigError, match="'loss.terms.tiny_test_dummy': is not a registered loss term"):
        load_config(TINY, [f"loss.terms.{NAME}=0.5"])
    with pytest.raises(ValueError, match="already registered"):
        register_head("psp")(lambda trunk, **common: None)
