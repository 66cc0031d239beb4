"""Attribute judge (wagi.models.judge), its training script, and the Fréchet distance of wagi.metrics."""
import numpy as np
import pytest
import torch

from tests.helpers import load_script
from wagi.data.demo_faces import (
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    TRAIN_SEED_END,
    face_tensor,
    render_from_attributes,
    sample_attributes,
)
from wagi.metrics import feature_statistics, frechet_distance
from wagi.models.judge import (
    FEATURE_DIM,
    JUDGE_TEST_SEED_OFFSET,
    JUDGE_TRAIN_SEED_OFFSET,
    AttributeJudge,
    JudgeCheckpointError,
    label_tensors,
    labels_from_attributes,
    load_judge,
    save_judge,
)

TINY = {"channels": (8, 8, 16, 16, 32), "convs": (1, 1, 1, 1, 1)}


@pytest.fixture(scope="module")
def train_judge():
    return load_script("train_judge")


def _randomise_bn(judge: AttributeJudge, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in judge.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_seed_ranges_are_disjoint():
    assert 60_000 <= JUDGE_TRAIN_SEED_OFFSET < TRAIN_SEED_END
    assert JUDGE_TEST_SEED_OFFSET >= TRAIN_SEED_END


@pytest.mark.parametrize("size", [64, 128])
def test_shapes(size):
    torch.manual_seed(0)
    judge = AttributeJudge().eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        feats = judge.features(x)
        logits = judge(x)
        pred = judge.predict(x)
        probs = judge.probabilities(x)
    assert feats.shape == (2, FEATURE_DIM) == (2, judge.feature_dim)
    assert set(logits) == set(BINARY_ATTRIBUTES) | set(CATEGORICAL_ATTRIBUTES) == set(pred) == set(probs)
    for name in BINARY_ATTRIBUTES:
        assert logits[name].shape == (2,) and pred[name].dtype == torch.bool and probs[name].shape == (2,)
    for name, classes in CATEGORICAL_ATTRIBUTES.items():
        assert logits[name].shape == (2, len(classes))
        assert pred[name].shape == (2,) and pred[name].dtype == torch.long
        assert torch.allclose(probs[name].sum(1), torch.ones(2))
    values = judge.predict_values(x)
    assert all(v in CATEGORICAL_ATTRIBUTES["hair_colour"] for v in values["hair_colour"])
    with torch.no_grad():  # one trunk pass for both: the same tensors as the two separate calls
        both_feats, both_logits = judge.features_and_logits(x)
    assert torch.equal(both_feats, feats) and all(torch.equal(both_logits[k], logits[k]) for k in logits)


def test_eval_batchnorm_folding_matches_unfolded():
    torch.manual_seed(0)
    judge = AttributeJudge(**TINY)
    _randomise_bn(judge)
    judge.eval()
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        folded = judge.features(x)
        h = judge.prepare(x)
        for stage in judge.stages:
            for layer in stage:
                h = torch.relu(layer.bn(layer.conv(h))) if hasattr(layer, "bn") else layer(h)
    torch.testing.assert_close(folded, torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1), rtol=1e-4, atol=1e-5)


def test_bad_input_is_rejected():
    judge = AttributeJudge(**TINY)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        judge(torch.zeros(3, 64, 64))


def test_labels_from_attributes():
    for seed in (0, 1, 7, 123456):
        attrs = sample_attributes(seed)
        labels = labels_from_attributes(attrs)
        for name in BINARY_ATTRIBUTES:
            assert labels[name] == int(attrs[name])
        for name, classes in CATEGORICAL_ATTRIBUTES.items():
            assert classes[labels[name]] == attrs[name]
    batch = label_tensors([sample_attributes(s) for s in (3, 4)])
    assert batch["skin_tone"].tolist() == [sample_attributes(s)["skin_tone"] for s in (3, 4)]
    with pytest.raises(ValueError, match="hair_colour"):
        labels_from_attributes(dict(sample_attributes(0), hair_colour="green"))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    judge = AttributeJudge(**TINY)
    _randomise_bn(judge)
    judge.eval()
    path = save_judge(judge, tmp_path / "j.pt", accuracy={"clean": {"has_glasses": 0.99}}, n_train=5)
    loaded, meta = load_judge(path, return_meta=True)
    assert meta["n_train"] == 5 and meta["accuracy"]["clean"]["has_glasses"] == 0.99
    assert not loaded.training and loaded.arch == judge.arch
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = judge(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k])


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_load_errors(tmp_path):
    with pytest.raises(JudgeCheckpointError, match="not found") as err:
        load_judge(tmp_path / "missing.pt")
    _one_line(err)
    assert issubclass(JudgeCheckpointError, ValueError)
    other = tmp_path / "other.pt"
    torch.save({"format": "wagi", "version": 1, "g_ema": {}}, other)
    with pytest.raises(JudgeCheckpointError, match="not an attribute-judge checkpoint") as err:
        load_judge(other)
    _one_line(err)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(JudgeCheckpointError, match="not a readable judge checkpoint") as err:
        load_judge(text)
    _one_line(err)
    fewer = save_judge(AttributeJudge(BINARY_ATTRIBUTES[:3], **TINY), tmp_path / "fewer.pt")
    with pytest.raises(JudgeCheckpointError, match="binary attributes") as err:
        load_judge(fewer)
    _one_line(err)
    assert load_judge(fewer, binary=None).binary == BINARY_ATTRIBUTES[:3]
    cats = {k: v for k, v in CATEGORICAL_ATTRIBUTES.items() if k != "neckline"}
    no_neck = save_judge(AttributeJudge(categorical=cats, **TINY), tmp_path / "no_neck.pt")
    with pytest.raises(JudgeCheckpointError, match="neckline") as err:
        load_judge(no_neck)
    _one_line(err)


def test_augment_keeps_shape_and_range(train_judge):
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    g = torch.Generator().manual_seed(0)
    y = train_judge.augment(x, g, p_down=1.0)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    plain = train_judge.augment(x, torch.Generator().manual_seed(0), p_blur=0, p_down=0, jitter=0, max_noise=0,
                                max_shift=0)
    assert all(torch.allclose(plain[i], x[i], atol=1e-6) or torch.allclose(plain[i], x[i].flip(-1), atol=1e-6)
               for i in range(4))


def test_tiny_training_decreases_loss(train_judge):
    torch.manual_seed(0)
    seeds = range(JUDGE_TRAIN_SEED_OFFSET, JUDGE_TRAIN_SEED_OFFSET + 16)
    attrs = [sample_attributes(s) for s in seeds]
    images = torch.stack([face_tensor(render_from_attributes(a, 64)) for a in attrs])
    images = ((images + 1) * 127.5).round().to(torch.uint8)
    labels = label_tensors(attrs)
    judge = AttributeJudge(**TINY)
    judge.eval()
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        before = float(train_judge.judge_loss(judge, judge(x), labels))
    summary = train_judge.train(judge, images, labels, torch.device("cpu"), epochs=30, batch_size=16, lr=1e-2,
                                progress=False, aug={"p_blur": 0, "p_down": 0, "max_noise": 0})
    assert summary["steps"] == 30 and not judge.training
    assert summary["last_loss"] < 0.5 * summary["first_loss"], summary["loss_curve"]
    with torch.no_grad():  # eval mode (running BatchNorm statistics) too
        after = float(train_judge.judge_loss(judge, judge(x), labels))
    assert after < 0.8 * before, (before, after)
    acc = train_judge.evaluate(judge, images, labels, torch.device("cpu"), conditions=("clean", "blur1.0", "down32"))
    assert set(acc) == {"clean", "blur1.0", "down32"} and 0 <= acc["clean"]["mean_binary"] <= 1


def test_render_faces_matches_the_dataset(train_judge):
    from wagi.data.demo_faces import DemoFaceDataset

    images, labels = train_judge.render_faces(JUDGE_TEST_SEED_OFFSET, 3, workers=2, progress=False)
    ds = DemoFaceDataset(3, 128, seed_offset=JUDGE_TEST_SEED_OFFSET)
    for i in range(3):
        assert torch.equal(images[i].float() / 127.5 - 1, ds[i])
        assert labels["has_glasses"][i] == int(ds.attributes(i)["has_glasses"])


def test_script_refuses_existing_output(train_judge, tmp_path, capsys):
    out = tmp_path / "judge.pt"
    out.write_bytes(b"x")
    assert train_judge.main(["--output", str(out), "--device", "cpu", "--n", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert train_judge.main(["--eval-only", str(tmp_path / "nope.pt"), "--device", "cpu"]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 2.0, size=d), rng.uniform(0.1, 2.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # torch inputs too
    got = frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(s1)), torch.tensor(mu2), torch.tensor(np.diag(s2)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_eigen_fallback_matches(monkeypatch):
    import builtins

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    with_scipy = frechet_distance(mu1, s1, mu2, s2)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("no scipy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(with_scipy, rel=1e-7)


def test_frechet_distance_of_a_set_with_itself_and_singular_covariance():
    torch.manual_seed(0)
    feats = torch.randn(500, 8)
    mu, sigma = feature_statistics(feats)
    assert mu.dtype == np.float64 and mu.shape == (8,) and sigma.shape == (8, 8)
    np.testing.assert_allclose(sigma, np.cov(feats.double().numpy(), rowvar=False), rtol=1e-12)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # fewer samples than dimensions: singular covariances still give a finite, non-negative distance
    few = torch.randn(5, 16)
    mu_f, sigma_f = feature_statistics(few)
    fd = frechet_distance(mu_f, sigma_f, mu_f, sigma_f)
    assert np.isfinite(fd) and fd == pytest.approx(0.0, abs=1e-3)
    assert frechet_distance(mu_f, sigma_f, mu_f + 1, sigma_f) == pytest.approx(16.0, abs=1e-3)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_local_head_reads_its_boxes_and_mirrors_the_second():
    from wagi.models.judge import EAR_BOXES, LocalHead
    head = LocalHead(EAR_BOXES).eval()
    x = torch.zeros(2, 3, 128, 128)
    (y0, x0), (y1, x1) = EAR_BOXES
    patch = torch.rand(3, 48, 48)
    x[0, :, y0:y0 + 48, x0:x0 + 48] = patch
    x[1, :, y1:y1 + 48, x1:x1 + 48] = patch.flip(-1)  # the mirror image in the other box
    with torch.no_grad():
        out = head(x)
        assert out.shape == (2,) and torch.allclose(out[0], out[1], atol=1e-5)
        y = x.clone()
        y[:, :, 100:, :] = torch.rand(2, 3, 28, 128)  # outside both boxes: no effect
        assert torch.equal(head(y), out)


def test_finetune_trains_only_the_local_head(train_judge):
    torch.manual_seed(0)
    base = AttributeJudge(**TINY).eval()
    judge = train_judge.with_local_heads(base, ["has_earrings"])
    assert "has_earrings" in judge.local_heads and judge.arch["local"]["has_earrings"]
    trunk_before = {k: v.clone() for k, v in judge.state_dict().items() if not k.startswith("local_heads.")}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in trunk_before.items())
    seeds = range(JUDGE_TRAIN_SEED_OFFSET, JUDGE_TRAIN_SEED_OFFSET + 16)
    attrs = [sample_attributes(s) for s in seeds]
    images = ((torch.stack([face_tensor(render_from_attributes(a, 128)) for a in attrs]) + 1) * 127.5).round()
    head_before = [p.clone() for p in judge.local_heads.parameters()]
    train_judge.train(judge, images.to(torch.uint8), label_tensors(attrs), torch.device("cpu"), epochs=3,
                      batch_size=8, progress=False, heads=["has_earrings"])
    after = judge.state_dict()
    assert all(torch.equal(after[k], v) for k, v in trunk_before.items())  # BatchNorm statistics included
    assert any(not torch.equal(a, b) for a, b in zip(head_before, judge.local_heads.parameters()))
    with pytest.raises(ValueError, match="no local boxes"):
        train_judge.with_local_heads(base, ["has_text"])
