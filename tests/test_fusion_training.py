"""Training-side options of the fusion stage: edit augmentation (fusion.edit_aug), the cascade in training, and
exact resume with them on."""
import json
from pathlib import Path

import pytest
import torch

from wagi.config import load_config
from wagi.training import Trainer
from wagi.training.edit_aug import EditAugmentation, edit_change_mask, edit_loss, edit_target

from .helpers import ROOT, tiny_wagi

TINY = str(ROOT / "configs" / "tiny_test.yaml")
EDIT_AUG = ["fusion.edit_aug.prob=1.0", "fusion.edit_aug.strength=[2.0,4.0]", "fusion.edit_aug.sefa_components=4"]


def _unit_rows(k, d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q[:k]


def test_edit_draws_are_seeded_and_follow_the_options():
    sefa = _unit_rows(4, 16)
    aug = EditAugmentation(0.5, (2.0, 4.0), ["sefa", "random"], 16, sefa=sefa)
    seeds = list(range(1000, 1400))
    picked, shifts = aug.draw_batch(seeds)
    again, shifts2 = aug.draw_batch(seeds)
    assert picked == again and torch.equal(shifts, shifts2)  # a function of the sample's seed
    assert 150 < len(picked) < 250 and shifts.shape == (len(picked), 16)
    norms = shifts.norm(dim=1)
    assert float(norms.min()) >= 2.0 - 1e-5 and float(norms.max()) <= 4.0 + 1e-5
    cos = (shifts / norms[:, None]) @ sefa.T  # a SeFa edit lies on one component (either sign)
    on_sefa = (cos.abs().amax(1) - 1).abs() < 1e-5
    assert 0.3 < float(on_sefa.float().mean()) < 0.7  # the two sources picked about equally
    assert (shifts[on_sefa] @ sefa.T > 0).any() and (shifts[on_sefa] @ sefa.T < 0).any()  # both signs
    only_random = EditAugmentation(1.0, (3.0, 3.0), ["random"], 16)
    picked, shifts = only_random.draw_batch(seeds[:20])
    assert picked == list(range(20))
    torch.testing.assert_close(shifts.norm(dim=1), torch.full((20,), 3.0))
    assert EditAugmentation(0.0, (1.0, 2.0), ["random"], 16).draw_batch(seeds)[0] == []
    with pytest.raises(ValueError, match="SeFa"):
        EditAugmentation(0.5, (1.0, 2.0), ["sefa"], 16)


def test_edit_target_keeps_the_input_details_only_where_the_edit_changed_nothing():
    base = torch.zeros(1, 3, 8, 8)
    edited = base.clone()
    edited[..., 2, 2] = 0.1  # the edit changes one pixel by 0.1
    mask = edit_change_mask(base, edited, 0.02, 0.06, dilate=1)
    assert mask.shape == (1, 1, 8, 8)
    assert float(mask[0, 0, 1:4, 1:4].min()) == 1.0 and float(mask.sum()) == 9.0  # the pixel and its neighbours
    half = edit_change_mask(base, edited * 0.4, 0.02, 0.06, dilate=0)  # a change of 0.04: half-way
    assert float(half[0, 0, 2, 2]) == pytest.approx(0.5) and float(half.sum()) == pytest.approx(0.5)
    x = torch.full((1, 3, 8, 8), 0.3)  # the input's details: x - base = 0.3 everywhere
    t = edit_target(x, base, edited, mask)
    assert torch.equal(t[..., 1:4, 1:4], edited[..., 1:4, 1:4])  # the edited generator image where it changed
    assert float(t[..., 5:, 5:].min()) == pytest.approx(0.3) and float(t[..., 5:, 5:].max()) == pytest.approx(0.3)


def test_edit_loss_is_pixel_l2_plus_the_high_bands():
    t = torch.zeros(1, 3, 4, 4)
    assert float(edit_loss(t + 0.5, t)) == pytest.approx(0.25)  # a flat error has no high bands
    yy, xx = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    checker = (0.5 * (-1.0) ** (yy + xx)).expand(1, 3, 4, 4)  # all in HH: 2·0.5 per 2x2 block
    assert float(edit_loss(checker, t)) == pytest.approx(5 * 0.25)  # L2 0.25 + HH (1.0² over a third of HF)


def _fusion_cfg(tmp_path, encoder_ckpt, *overrides):
    return load_config(TINY, [f"experiment.out_dir={tmp_path}", "train.stage=fusion", "fusion.kind=wavelet",
                              f"train.encoder_ckpt={encoder_ckpt}", "data.hflip=false", *overrides])


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    tiny_wagi().save(path)  # the encoder config of tiny_test.yaml, untrained: enough to freeze
    return path


def test_a_training_step_with_edit_augmentation_logs_its_loss_and_trains_the_fusion(tmp_path, encoder_ckpt, capsys):
    t = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, *EDIT_AUG, "fusion.gate_init=0.5", "fusion.cascade=true"),
                progress=False)
    assert "fusion.edit_mode is 'reuse'" in capsys.readouterr().err  # what it trains is the recompute pass
    assert t.step_module.edit_aug is not None and t.step_module.edit_aug.sefa.shape == (4, 32)
    x = torch.stack([t.test_set[i] for i in range(4)])
    logs = t.train_step(x)
    assert logs["edit_aug_share"] == 1.0 and 0.0 < logs["edit_aug_changed"] <= 1.0
    assert logs["edit_aug"] > 0 and torch.isfinite(torch.tensor(logs["edit_aug"]))
    assert logs["edit_aug_weighted"] == pytest.approx(1.0 * logs["edit_aug"])  # loss.edit_aug = 1
    # the edit pass alone reaches every level of the fusion and the aligner's displacement field
    step, m = t.step_module, t.model
    m.zero_grad(set_to_none=True)
    with torch.no_grad():
        w = m.encode(x)
        base = m.decode(w)
    value, side = step.edit_pass(x, w, base, [11, 12, 13, 14])
    value.backward()
    for name, p in m.fusion.named_parameters():
        if name.startswith("aligner.") and not name.startswith("aligner.flow."):
            continue  # behind the zero-initialised flow layer: no gradient until it moves
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in m.encoder.parameters()) and all(p.grad is None for p in m.generator.parameters())
    # no edited sample: the term is there (every rank logs the same keys), 0, without gradient
    t.step_module.edit_aug.prob = 0.0
    logs = t.train_step(x)
    assert logs["edit_aug"] == 0.0 and logs["edit_aug_share"] == 0.0


def test_edit_augmentation_off_adds_nothing(tmp_path, encoder_ckpt):
    t = Trainer(_fusion_cfg(tmp_path, encoder_ckpt), progress=False)
    assert t.step_module.edit_aug is None
    logs = t.train_step(torch.stack([t.test_set[i] for i in range(2)]))
    assert not any(k.startswith("edit_aug") for k in logs) and not any(k.startswith("lattice") for k in logs)


def _train_logs(run_dir):
    lines = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["total"], r["edit_aug"], r["lattice"]) for r in lines if r["kind"] == "train"}


def test_resume_is_exact_with_the_fusion_training_options(tmp_path, encoder_ckpt):
    common = ["train.log_every=1", "train.val_every=100", "train.image_every=100", "train.save_every=3",
              "fusion.edit_aug.prob=0.5", "fusion.cascade=true", "loss.lattice=0.1", "data.hflip=true",
              "train.batch_size=2"]
    straight = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=a", "train.max_steps=6", *common),
                       progress=False)
    straight.train()
    half = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=b", "train.max_steps=3", *common),
                   progress=False)
    half.train()
    del half
    resumed = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=b", "train.max_steps=6", *common),
                      resume="auto", progress=False)
    assert resumed.step == 3
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = _train_logs(tmp_path / "a"), _train_logs(tmp_path / "b")
    assert la == lb and sorted(la) == list(range(1, 7))
    assert any(v[1] > 0 for v in la.values()) and any(v[1] == 0 for v in la.values())  # some steps edit, some not


def test_edit_augmentation_trains_the_feature_fusion_too(tmp_path, encoder_ckpt):
    """The HFGI-style baseline gets the same augmentation (a fair comparison): its edit pass reaches its modules."""
    cfg = load_config(TINY, [f"experiment.out_dir={tmp_path}", "train.stage=fusion", "fusion.kind=feature",
                             "fusion.resolutions=[16]", f"train.encoder_ckpt={encoder_ckpt}", "data.hflip=false",
                             "fusion.edit_mode=recompute", *EDIT_AUG,
                             # an untrained generator's edits change every pixel a lot: with the default mask the
                             # target would be G(w') everywhere, which the zero-initialised heads already draw
                             "fusion.edit_aug.mask=[1.0,4.0,0]"])
    t = Trainer(cfg, progress=False)
    x = torch.stack([t.test_set[i] for i in range(4)])
    logs = t.train_step(x)
    assert logs["edit_aug_share"] == 1.0 and logs["edit_aug"] > 0 and torch.isfinite(torch.tensor(logs["edit_aug"]))
    m = t.model
    m.zero_grad(set_to_none=True)
    with torch.no_grad():
        w = m.encode(x)
        base = m.decode(w)
    value, _ = t.step_module.edit_pass(x, w, base, [11, 12, 13, 14])
    value.backward()
    trained = [n for n, p in m.fusion.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0]
    assert any(not n.startswith("aligner.") for n in trained) and "aligner.flow.weight" in trained
    assert all(p.grad is None for p in m.generator.parameters())


def test_fusion_ckpt_starts_the_fusion_from_a_saved_model(tmp_path, encoder_ckpt):
    """train.fusion_ckpt: continue or fine-tune a saved fusion module (e.g. a bundled wagi.pt) in a fresh run."""
    first = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=first", "fusion.cascade=true",
                                "fusion.gate_init=0.5"), progress=False)
    first.train_step(torch.stack([first.test_set[i] for i in range(2)]))  # weights away from their initial values
    saved = tmp_path / "first_model.pt"
    first.model.save(saved)
    again = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=again", "fusion.cascade=true",
                                f"train.fusion_ckpt={saved}"), progress=False)
    assert again.step == 0  # a fresh run: step count and optimiser start anew
    a, b = first.model.fusion.state_dict(), again.model.fusion.state_dict()
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    fresh = Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=fresh", "fusion.cascade=true"), progress=False)
    assert not all(torch.equal(a[k], fresh.model.fusion.state_dict()[k]) for k in a)  # not the initial weights
    with pytest.raises(ValueError, match=r"fusion.cascade is True in .* but False in this config"):
        Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=x", f"train.fusion_ckpt={saved}"), progress=False)
    with pytest.raises(ValueError, match="fusion.kind is 'none' in .* but 'wavelet' in this config"):  # encoder only
        Trainer(_fusion_cfg(tmp_path, encoder_ckpt, "experiment.name=y", f"train.fusion_ckpt={encoder_ckpt}"),
                progress=False)
    enc_stage = load_config(TINY, [f"experiment.out_dir={tmp_path}", "experiment.name=z", "fusion.kind=wavelet",
                                   f"train.fusion_ckpt={saved}"])
    with pytest.raises(ValueError, match="needs train.stage 'fusion' or 'joint'"):
        Trainer(enc_stage, progress=False)
