"""e4e's progressive training (encoder.progressive_every / progressive_start, n_active for the delta
regulariser) and the restyle_e4e head, trained with the real Trainer on the tiny config."""
from pathlib import Path

import pytest
import torch

from wagi.config import ConfigError, load_config
from wagi.losses import DeltaRegularizer, InversionCriterion
from wagi.models.encoders import Encoder4Editing
from wagi.models.wagi import WaGI
from wagi.training import Trainer
from wagi.training.trainer import progressive_n_active

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_test.yaml")
N_LATENT = 6  # SWAGAN-32


def _cfg(tmp_path, *overrides):
    return load_config(TINY, [f"experiment.out_dir={tmp_path}", "encoder.kind=e4e", "encoder.n_iters=1",
                              "loss.delta_reg=0.01", "train.log_every=1", "train.val_every=100",
                              "train.image_every=100", *overrides])


def test_schedule_values():
    # W only for `start` steps, then delta k from step start + (k - 1) * every, capped at n_latent - 1
    assert [progressive_n_active(s, 12, every=2, start=3) for s in range(8)] == [0, 0, 0, 1, 1, 2, 2, 3]
    assert progressive_n_active(10_000, 12, every=2, start=3) == 11
    assert [progressive_n_active(s, 4, every=1) for s in range(5)] == [1, 2, 3, 3, 3]
    assert progressive_n_active(0, 12, every=None) == 11  # off: every delta from the start


def test_criterion_passes_n_active_to_the_delta_term():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 6, 8, generator=g)
    x = torch.rand(2, 3, 16, 16, generator=g)
    crit = InversionCriterion({"l2": 1.0, "delta": 1.0})
    _, logs2 = crit(x, x, w_plus=w, n_active=2)
    _, logs_all = crit(x, x, w_plus=w)
    assert logs2["delta"] == pytest.approx(DeltaRegularizer()(w, n_active=2).item(), rel=1e-6)
    assert logs_all["delta"] == pytest.approx(DeltaRegularizer()(w).item(), rel=1e-6)
    want2 = sum(torch.linalg.vector_norm(w[:, i] - w[:, 0], dim=1).mean() for i in (1, 2))
    assert logs2["delta"] == pytest.approx(want2.item(), rel=1e-6) and logs2["delta"] < logs_all["delta"]


def test_trainer_grows_the_active_deltas_and_regularises_only_those(tmp_path):
    t = Trainer(_cfg(tmp_path, "encoder.progressive_every=2", "encoder.progressive_start=1", "train.max_steps=5"),
                progress=False)
    enc = t.model.encoder
    assert isinstance(enc, Encoder4Editing) and t.model.n_active == 0
    head5 = enc.styles[5].linear.weight.clone()
    seen = []
    for x in t.batches():
        if t.step == 5:
            break
        t.train_step(x)
        seen.append(t.model.n_active)
    assert seen == [0, 1, 1, 2, 2]
    assert torch.equal(enc.styles[5].linear.weight, head5)  # an inactive delta's head gets no gradient

    # The step hands the model's n_active to the delta term: with distinct latent_avg rows, inactive entries
    # differ from entry 0 too, and only the active ones are counted.
    m = t.model
    m.latent_avg.copy_(torch.randn(m.latent_avg.shape, generator=torch.Generator().manual_seed(0)))
    x = torch.stack([t.test_set[i] for i in range(2)])
    with torch.no_grad():
        _, logs, w, _ = t.step_module(x, m.latent_avg.unsqueeze(0).expand(2, -1, -1), None)
    assert logs["delta"] == pytest.approx(DeltaRegularizer()(w, n_active=2).item(), rel=1e-5)
    assert logs["delta"] < DeltaRegularizer()(w).item()


def test_schedule_resumes_and_checkpoints_record_n_active(tmp_path):
    common = ["encoder.progressive_every=2", "encoder.progressive_start=1", "train.save_every=3"]
    straight = Trainer(_cfg(tmp_path, "experiment.name=a", "train.max_steps=6", *common), progress=False)
    straight.train()
    half = Trainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=3", *common), progress=False)
    half.train()
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["n_active"] == 1 and ckpt["training"]["n_active"] == 1  # the stage of step index 2
    loaded = WaGI.load(tmp_path / "b" / "checkpoints" / "latest.pt")
    assert loaded.n_active == 1  # a model saved mid-schedule runs with the deltas it was trained with
    resumed = Trainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=6", *common), resume="auto",
                      progress=False)
    assert resumed.step == 3 and resumed.model.n_active == 2
    resumed.train()
    assert straight.model.n_active == resumed.model.n_active == 3
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_without_a_schedule_every_delta_is_active_and_unrecorded(tmp_path):
    t = Trainer(_cfg(tmp_path, "train.max_steps=1", "train.save_every=1"), progress=False)
    assert t.model.n_active == N_LATENT - 1
    t.train()
    ckpt = torch.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt", weights_only=True)
    assert "n_active" not in ckpt and ckpt["training"]["n_active"] == N_LATENT - 1
    assert WaGI.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt").n_active == N_LATENT - 1


def test_schedule_needs_a_progressive_head(tmp_path):
    with pytest.raises(ConfigError, match="encoder.progressive_every.*'restyle' heads have no progressive stages"):
        load_config(TINY, ["encoder.progressive_every=2"])
    with pytest.raises(ConfigError, match="encoder.progressive_every.*must be >= 1"):
        _cfg(tmp_path, "encoder.progressive_every=0")
    with pytest.raises(ConfigError, match="encoder.progressive_start.*only applies with encoder.progressive_every"):
        _cfg(tmp_path, "encoder.progressive_start=5")  # a start without a schedule would be silently ignored


def test_restyle_e4e_builds_and_trains(tmp_path):
    cfg = _cfg(tmp_path, "encoder.kind=restyle_e4e", "encoder.n_iters=2", "encoder.progressive_every=1",
               "train.max_steps=2", "train.save_every=2")
    t = Trainer(cfg, progress=False)
    m = t.model
    assert m.iterative and m.progressive and m.n_iters == 2
    assert isinstance(m.encoder, Encoder4Editing) and not m.encoder.use_fpn
    assert m.encoder.backbone.input_nc == 6
    x = torch.stack([t.test_set[i] for i in range(2)])
    assert m.encoder_input(x).shape == (2, 6, 32, 32)
    logs = t.train()
    assert torch.isfinite(torch.tensor(logs["total"])) and logs["delta"] > 0
    assert m.n_active == 2
    loaded = WaGI.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt")
    steps = loaded.eval().encode(x, return_steps=True)
    assert len(steps) == 2 and loaded.n_active == 2
    with torch.no_grad():
        assert torch.equal(loaded.eval().invert(x)[0], m.eval().invert(x)[0])
    with pytest.raises(ConfigError, match="encoder.n_iters"):
        load_config(TINY, ["encoder.kind=e4e", "encoder.n_iters=2"])
