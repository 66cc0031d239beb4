"""wagi.editing: InterFaceGAN boundaries, SeFa, GANSpace, StyleCLIP (tiny random encoder), mappers, latents."""
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.config import load_config
from wagi.editing import (
    BoundaryError,
    CLIPUnavailableError,
    EditOptions,
    GanspaceEdit,
    GlobalDirectionStats,
    LatentEdit,
    LatentFileError,
    LatentMapper,
    LevelsMapper,
    attribute_value,
    build_edit,
    compute_global_stats,
    fit_boundary,
    ganspace_direction,
    ganspace_directions,
    global_direction,
    labels_array,
    latent_index_of,
    load_boundary,
    load_clip,
    load_latents,
    load_mapper,
    modulation_weights,
    name_key,
    parse_direction,
    parse_layer_range,
    project_boundary,
    read_labels,
    render_edits,
    restrict_layers,
    save_boundary,
    sefa_directions,
    shift_latents,
    text_direction,
)
from wagi.models.wagi import WaGI

torch.set_num_threads(1)
TINY = "configs/tiny_test.yaml"
N_LATENT, STYLE_DIM = 6, 32  # the tiny test SWAGAN-32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = WaGI.from_config(load_config(TINY, ["fusion.kind=wavelet"])).eval()
    with torch.no_grad():
        for gate in m.fusion.gates.values():
            gate.fill_(0.7)  # a fusion that changes the image, so "fused" and "plain" differ
    return m


def _unit(v):
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------------- boundaries
def test_load_boundary_shapes_and_layer_range(tmp_path):
    b = _unit(np.random.default_rng(0).normal(size=(1, 512))).astype(np.float32)
    np.save(tmp_path / "w.npy", b)
    got = load_boundary(tmp_path / "w.npy", 12, 512)
    assert got.shape == (1, 512) and torch.equal(got, torch.from_numpy(b))
    per = torch.randn(12, 512)
    torch.save(per.unsqueeze(0), tmp_path / "per.pt")  # e4e's (1, L, D) layout
    torch.testing.assert_close(load_boundary(tmp_path / "per.pt", 12, 512), per, rtol=0, atol=0)
    torch.save({"boundary": per[0]}, tmp_path / "dict.pt")
    assert torch.equal(load_boundary(tmp_path / "dict.pt", 12, 512), per[:1])
    ranged = load_boundary(tmp_path / "w.npy", 12, 512, layer_range=(3, 7))
    assert ranged.shape == (12, 512)
    assert torch.equal(ranged[3:7], torch.from_numpy(b).expand(4, -1))
    assert ranged[:3].abs().sum() == 0 and ranged[7:].abs().sum() == 0


def test_load_boundary_errors(tmp_path):
    np.save(tmp_path / "d256.npy", np.ones((1, 256), np.float32))
    with pytest.raises(BoundaryError, match="dimension 256 .*style_dim=512"):
        load_boundary(tmp_path / "d256.npy", 12, 512)
    np.save(tmp_path / "sg2.npy", np.ones((1, 18, 512), np.float32))
    with pytest.raises(BoundaryError) as err:
        load_boundary(tmp_path / "sg2.npy", 12, 512)
    msg = str(err.value)
    assert "18 W+ entries" in msg and "StyleGAN2 at 1024" in msg and "n_latent=12" in msg
    assert "do not transfer" in msg and "train_boundary.py" in msg and "\n" not in msg
    np.save(tmp_path / "zero.npy", np.zeros((1, 512), np.float32))
    with pytest.raises(BoundaryError, match="all zeros"):
        load_boundary(tmp_path / "zero.npy", 12, 512)
    np.save(tmp_path / "nan.npy", np.full((1, 512), np.nan, np.float32))
    with pytest.raises(BoundaryError, match="NaN"):
        load_boundary(tmp_path / "nan.npy", 12, 512)
    np.save(tmp_path / "int.npy", np.ones((1, 512), np.int64))
    with pytest.raises(BoundaryError, match="floating-point"):
        load_boundary(tmp_path / "int.npy", 12, 512)
    (tmp_path / "b.txt").write_text("0 1")
    with pytest.raises(BoundaryError, match="unsupported boundary file type"):
        load_boundary(tmp_path / "b.txt", 12, 512)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(BoundaryError, match="not a readable .npy"):
        load_boundary(tmp_path / "junk.npy", 12, 512)
    with pytest.raises(FileNotFoundError):
        load_boundary(tmp_path / "missing.npy", 12, 512)
    np.save(tmp_path / "ok.npy", np.ones((1, 512), np.float32))
    with pytest.raises(BoundaryError, match="outside the W\\+ entries"):
        load_boundary(tmp_path / "ok.npy", 12, 512, layer_range=(10, 14))


def test_save_boundary_roundtrip_and_no_overwrite(tmp_path):
    d = torch.randn(6, 32)
    save_boundary(tmp_path / "b.npy", d)
    assert np.array_equal(np.load(tmp_path / "b.npy"), d.numpy())
    with pytest.raises(FileExistsError):
        save_boundary(tmp_path / "b.npy", d)
    save_boundary(tmp_path / "b.npy", 2 * d, overwrite=True)
    assert np.array_equal(np.load(tmp_path / "b.npy"), 2 * d.numpy())


def _separable(n, dim, seed, margin=0.3):
    rng = np.random.default_rng(seed)
    normal = _unit(rng.normal(size=dim))
    x = rng.normal(size=(n, dim)) * 1.5 + 20 * rng.normal(size=dim)  # far off-centre, like W of a trained G
    dist = (x - x.mean(0)) @ normal
    keep = np.abs(dist) > margin
    return x[keep], dist[keep] > 0, normal


@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_fit_boundary_recovers_true_normal(method):
    x, y, normal = _separable(900, 16, seed=1)
    d, report = fit_boundary(x, y, method=method, seed=0)
    assert d.shape == (1, 16) and d.dtype == torch.float32
    assert abs(float(d.norm()) - 1) < 1e-6
    assert float(d[0].double() @ torch.from_numpy(normal)) > 0.95  # right direction, right sign
    assert report["n_pos"] == int(y.sum()) and report["n_neg"] == int((~y).sum())
    assert report["n_train"] + report["n_val"] == len(y)
    assert report["train_acc"] > 0.97 and report["val_acc"] > 0.95


def test_fit_boundary_scores_use_top_and_bottom_fraction():
    rng = np.random.default_rng(2)
    normal = _unit(rng.normal(size=12))
    x = rng.normal(size=(1000, 12))
    scores = x @ normal + 0.05 * rng.normal(size=1000)
    scores[:10] = np.nan  # invalid scores are left out
    d, report = fit_boundary(torch.from_numpy(x).float(), scores, chosen_ratio=0.1, split_ratio=0.5)
    assert report["chosen_num"] == 99 and report["n_pos"] == 99 and report["n_neg"] == 99
    assert report["binary_labels"] is False
    assert float(d[0].double() @ torch.from_numpy(normal)) > 0.95


def test_fit_boundary_per_layer_and_errors():
    rng = np.random.default_rng(3)
    x, y, normal = _separable(600, 8, seed=4)
    other = rng.normal(size=x.shape)  # entry 1 carries no label information
    w = np.stack([x, other, -x], axis=1)  # (N, 3, 8)
    d, report = fit_boundary(w, y.astype(np.float32))
    assert d.shape == (3, 8)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3))
    assert float(d[0].double() @ torch.from_numpy(normal)) > 0.95
    assert float(d[2].double() @ torch.from_numpy(normal)) < -0.95
    assert report["val_acc_per_layer"][1] < 0.8 < report["val_acc_per_layer"][0]
    with pytest.raises(ValueError, match="at least 2 positive"):
        fit_boundary(x[:5], np.array([True, False, False, False, False]))
    with pytest.raises(ValueError, match="labels"):
        fit_boundary(x, y[:-1])
    with pytest.raises(ValueError, match="unknown method"):
        fit_boundary(x, y, method="tree")


def test_project_boundary_is_orthogonal_and_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    p, c1, c2 = (F.normalize(torch.randn(1, 64, generator=g), dim=1) for _ in range(3))
    one = project_boundary(p, c1)
    expected = p - (p @ c1.T) * c1  # InterFaceGAN, one condition
    torch.testing.assert_close(one, expected / expected.norm())
    two = project_boundary(p, c1, c2)
    assert abs(float(two @ c1.T)) < 1e-6 and abs(float(two @ c2.T)) < 1e-6
    assert abs(float(two.norm()) - 1) < 1e-6 and float(two @ p.T) > 0
    with pytest.raises(ValueError, match="span"):
        project_boundary(c1, c1)


# ------------------------------------------------------------------------------------------- SeFa
class _Mod(nn.Module):
    """Holds ``conv.modulation`` like a StyledConv / ToRGB (key ``conv.modulation.weight``)."""

    def __init__(self, weight):
        super().__init__()
        self.conv = nn.Module()
        self.conv.modulation = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.conv.modulation.weight.copy_(weight)


class _FakeSynthesis(nn.Module):
    """Generator-like module: modulation weights with a planted dominant direction ``v`` in conv layers and a
    (larger) direction ``u`` in the to_rgbs layers only."""

    def __init__(self, dim=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.v = F.normalize(torch.randn(dim, generator=g, dtype=torch.float64), dim=0)
        self.u = F.normalize(torch.randn(dim, generator=g, dtype=torch.float64), dim=0)

        def weight(rows, planted, scale):
            noise = 0.1 * torch.randn(rows, dim, generator=g, dtype=torch.float64)
            return (noise + scale * torch.randn(rows, 1, generator=g, dtype=torch.float64) * planted).float()

        self.conv1 = _Mod(weight(7, self.v, 3.0))
        self.to_rgb1 = _Mod(weight(3, self.v, 3.0))
        self.convs = nn.ModuleList([_Mod(weight(5, self.v, 3.0)) for _ in range(4)])
        self.to_rgbs = nn.ModuleList([_Mod(weight(6, self.u, 30.0)) for _ in range(2)])


def _numpy_sefa(weights):
    a = np.concatenate([w.detach().double().numpy() for w in weights], axis=0)
    vals, vecs = np.linalg.eigh(a.T @ a)
    order = np.argsort(vals)[::-1]
    vecs = vecs[:, order].T
    idx = np.abs(vecs).argmax(1)
    return vecs * np.sign(vecs[np.arange(len(vecs)), idx])[:, None], vals[order]


def test_sefa_equals_numpy_eigendecomposition_and_finds_planted_direction():
    fake = _FakeSynthesis()
    vecs, vals = sefa_directions(fake)
    chosen = modulation_weights(fake)
    assert list(chosen) == ["conv1.conv.modulation.weight", "to_rgb1.conv.modulation.weight"] + [
        f"convs.{i}.conv.modulation.weight" for i in range(4)]  # rosinality: to_rgb1 in, to_rgbs out
    ref_vecs, ref_vals = _numpy_sefa(chosen.values())
    np.testing.assert_allclose(vecs.numpy(), ref_vecs, atol=1e-5)
    np.testing.assert_allclose(vals.numpy(), ref_vals, rtol=1e-5)
    torch.testing.assert_close(vecs @ vecs.T, torch.eye(10), atol=1e-5, rtol=0)
    assert abs(float(vecs[0].double() @ fake.v)) > 0.99
    with_rgbs, _ = sefa_directions(fake, include_to_rgbs=True)
    assert abs(float(with_rgbs[0].double() @ fake.u)) > 0.99  # the to_rgbs' direction dominates only when asked


def test_sefa_layer_selection_by_entry_and_key():
    fake = _FakeSynthesis()
    vecs, vals = sefa_directions(fake, layers=[0])
    ref_vecs, ref_vals = _numpy_sefa([fake.conv1.conv.modulation.weight])
    np.testing.assert_allclose(vecs.numpy()[:1], ref_vecs[:1], atol=1e-5)
    np.testing.assert_allclose(vals.numpy(), ref_vals, rtol=1e-4, atol=1e-6)
    assert list(modulation_weights(fake, layers=[3, 4])) == ["convs.2.conv.modulation.weight",
                                                             "convs.3.conv.modulation.weight"]
    assert list(modulation_weights(fake, layers=[3], include_to_rgbs=True)) == [
        "convs.2.conv.modulation.weight", "to_rgbs.0.conv.modulation.weight"]
    assert list(modulation_weights(fake, layers=["to_rgbs.1.conv.modulation.weight"])) == [
        "to_rgbs.1.conv.modulation.weight"]
    with pytest.raises(ValueError, match="no modulation weights"):
        modulation_weights(fake, layers=[9])
    with pytest.raises(KeyError, match="no such modulation"):
        modulation_weights(fake, layers=["conv9.weight"])


def test_latent_index_of_matches_generator_synthesis(model):
    """Every modulation layer of the real SWAGAN receives exactly the W+ entry latent_index_of names."""
    g = model.generator
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
             for name, m in g.named_modules() if name.endswith("conv.modulation")]
    w = torch.randn(2, N_LATENT, STYLE_DIM)
    with torch.no_grad():
        g.synthesize(w, randomize_noise=False)
    for h in hooks:
        h.remove()
    assert len(seen) == 1 + 1 + len(g.convs) + len(g.to_rgbs)
    for name, style in seen.items():
        assert torch.equal(style, w[:, latent_index_of(name + ".weight")]), name


# --------------------------------------------------------------------------------------- GANSpace
class _FakeMapping(nn.Module):
    """``get_latent(z) = mean + (z · scales) @ R``: planted principal axes R (rows) with std ``scales``."""

    def __init__(self, dim=12, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.style_dim = dim
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.register_buffer("rot", q.T.float())
        self.register_buffer("scales", torch.linspace(6.0, 0.5, dim))
        self.register_buffer("mean", torch.randn(dim, generator=g))
        self.seen = []

    def get_latent(self, z):
        self.seen.append(z.clone())
        return self.mean + (z * self.scales) @ self.rot


def test_ganspace_components_orthonormal_and_match_planted_axes():
    fake = _FakeMapping()
    comps, mean, std = ganspace_directions(fake, n_samples=4000, n_components=5, seed=3, batch_size=700)
    assert comps.shape == (5, 12) and mean.shape == (12,) and std.shape == (5,)
    torch.testing.assert_close(comps @ comps.T, torch.eye(5), atol=1e-5, rtol=0)
    assert abs(float(comps[0] @ fake.rot[0])) > 0.99  # the planted dominant variance direction
    torch.testing.assert_close(std, fake.scales[:5], rtol=0.06, atol=0)
    # exact PCA of the very codes it drew, computed independently
    w = (fake.mean + (torch.cat(fake.seen) * fake.scales) @ fake.rot).double().numpy()
    cov = np.cov(w, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    ref = vecs[:, ::-1].T[:5]
    ref = ref * np.sign(ref[np.arange(5), np.abs(ref).argmax(1)])[:, None]
    np.testing.assert_allclose(comps.numpy(), ref, atol=1e-4)
    np.testing.assert_allclose(std.numpy() ** 2, vals[::-1][:5], rtol=1e-4)
    np.testing.assert_allclose(mean.numpy(), w.mean(0), atol=1e-5)
    again = ganspace_directions(_FakeMapping(), n_samples=4000, n_components=5, seed=3, batch_size=700)
    assert all(torch.equal(a, b) for a, b in zip((comps, mean, std), again))  # deterministic, signs included
    assert (comps[torch.arange(5), comps.abs().argmax(1)] > 0).all()


def test_ganspace_additive_and_hfgi_edits():
    comps = torch.eye(4)[:3]
    std = torch.tensor([2.0, 1.0, 0.5])
    mean = torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = ganspace_direction(comps, std, 1, n_latent=5, layer_range=(1, 3))
    assert d.shape == (5, 4) and torch.equal(d[1], torch.tensor([0.0, 1.0, 0, 0])) and d[[0, 3, 4]].abs().sum() == 0
    w = torch.randn(2, 5, 4)
    edit = GanspaceEdit.parse("0, 0, 3, 2.5")
    assert edit == GanspaceEdit(0, 0, 3, 2.5)
    edited = w + edit.directions(w, comps, mean, std)
    coord = (edited[:, 0] - mean) @ comps[0] / std[0]
    torch.testing.assert_close(coord, torch.full((2,), 2.5))  # e4e: coordinate of entry 0 set to 2.5 sigma
    shift = edited - w
    torch.testing.assert_close(shift[:, 1], shift[:, 0])
    assert shift[:, 3:].abs().sum() == 0 and shift[..., 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="INDEX,START,END,STRENGTH"):
        GanspaceEdit.parse("1,2,3")


# ---------------------------------------------------------------------------------------- StyleCLIP
class TinyTextImageEncoder:
    """Random, fixed text / image embedding (E = 16): bag of character embeddings; pooled pixels."""

    def __init__(self, dim=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.chars = torch.randn(128, dim, generator=g)
        self.proj = torch.randn(3 * 4 * 4, dim, generator=g)
        self.calls = 0

    def encode_text(self, texts):
        return torch.stack([self.chars[[ord(c) % 128 for c in t]].mean(0) for t in texts])

    def encode_image(self, images):
        self.calls += images.shape[0]
        return torch.tanh(F.adaptive_avg_pool2d(images, 4).flatten(1) @ self.proj)


def _linear_decoder(n_latent, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_latent * dim, 3 * 8 * 8, generator=g) / math.sqrt(n_latent * dim)
    return lambda w: torch.tanh((w.flatten(1) @ mix).view(-1, 3, 8, 8))


def _naive_stats(decode, enc, codes, axes, scale, step):
    n_latent, k = codes.shape[1], axes.shape[0]
    out = torch.zeros(n_latent, k, 16, dtype=torch.float64)
    for code in codes:
        for row in range(n_latent):
            for j in range(k):
                plus, minus = code.clone(), code.clone()
                plus[row] += step * scale[j] * axes[j]
                minus[row] -= step * scale[j] * axes[j]
                e = F.normalize(enc.encode_image(decode(torch.stack([plus, minus]))), dim=-1)
                out[row, j] += (e[0] - e[1]).double()
    return F.normalize(out / codes.shape[0], dim=-1).float()


def test_global_stats_equal_naive_finite_differences():
    torch.manual_seed(0)
    decode, enc = _linear_decoder(4, 6), TinyTextImageEncoder()
    codes = torch.randn(3, 4, 6)
    axes = torch.linalg.qr(torch.randn(6, 6))[0].T[:3].contiguous()
    scale = torch.tensor([1.5, 1.0, 0.5])
    stats = compute_global_stats(decode, enc, codes, axes, scale, step=2.0, batch_size=6)
    assert stats.delta_i.shape == (4, 3, 16)
    torch.testing.assert_close(stats.delta_i, _naive_stats(decode, enc, codes, axes, scale, 2.0), atol=1e-5, rtol=0)
    assert enc.calls == 3 * 4 * 3 * 2 * 2  # batched and naive: 2 renders per unit and code each
    again = compute_global_stats(decode, TinyTextImageEncoder(), codes, axes, scale, step=2.0, batch_size=4)
    torch.testing.assert_close(again.delta_i, stats.delta_i, atol=1e-6, rtol=0)  # batching does not matter


def test_global_direction_rule_beta_and_determinism(tmp_path):
    enc = TinyTextImageEncoder()
    g = torch.Generator().manual_seed(1)
    delta_i = F.normalize(torch.randn(5, 4, 16, generator=g), dim=-1)
    axes = torch.linalg.qr(torch.randn(8, 8, generator=g))[0].T[:4].contiguous()
    scale = torch.tensor([3.0, 2.0, 1.0, 0.5])
    stats = GlobalDirectionStats(delta_i, axes, scale)
    dt = text_direction(enc, "a smiling face", "a face")
    assert abs(float(dt.norm()) - 1) < 1e-6
    torch.testing.assert_close(text_direction(enc, "a face", "a smiling face"), -dt)
    r = delta_i @ dt
    beta = float(r.abs().flatten().median())
    d, info = global_direction(stats, enc, "a smiling face", "a face", beta=beta)
    kept = r.abs() >= beta
    rk = torch.where(kept, r, torch.zeros_like(r)) / r.abs().max()
    torch.testing.assert_close(d, (rk * scale) @ axes)  # hand computation of StyleCLIP's rule on W+ units
    assert d.shape == (5, 8) and info["n_kept"] == int(kept.sum()) and 0 < info["n_kept"] < 20
    d2, _ = global_direction(stats, TinyTextImageEncoder(), "a smiling face", "a face", beta=beta)
    assert torch.equal(d, d2)
    zero, info0 = global_direction(stats, enc, "a smiling face", "a face", beta=float(r.abs().max()) + 1e-3)
    assert info0["n_kept"] == 0 and zero.abs().sum() == 0
    stats.save(tmp_path / "stats.pt")
    loaded = GlobalDirectionStats.load(tmp_path / "stats.pt")
    assert torch.equal(loaded.delta_i, delta_i) and loaded.step == stats.step
    with pytest.raises(ValueError, match="n_latent=5"):
        loaded.check(n_latent=6)


def test_text_edit_on_model_with_tiny_encoder(model, tmp_path):
    opts = EditOptions(encoder=TinyTextImageEncoder(), pca_samples=500, clip_axes=3, clip_samples=1, beta=0.0,
                       clip_stats=str(tmp_path / "stats.pt"), log=lambda s: None)
    edit = build_edit(model, "text:a smiling face", opts)
    assert edit.direction.shape == (N_LATENT, STYLE_DIM) and (tmp_path / "stats.pt").is_file()
    cached = build_edit(model, "text:a smiling face", EditOptions(encoder=TinyTextImageEncoder(), beta=0.0,
                                                                 clip_stats=str(tmp_path / "stats.pt")))
    assert torch.equal(cached.direction, edit.direction)  # same statistics, read back from the cache
    ranged = build_edit(model, "text:a smiling face", EditOptions(
        encoder=TinyTextImageEncoder(), beta=0.0, clip_stats=str(tmp_path / "stats.pt"), layer_range=(2, 4)))
    assert ranged.direction[[0, 1, 4, 5]].abs().sum() == 0
    torch.testing.assert_close(ranged.direction[2:4], edit.direction[2:4])


def test_clear_error_without_clip(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "clip", None)
    with pytest.raises(CLIPUnavailableError) as err:
        load_clip()
    assert "open_clip" in str(err.value) and "clip" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CLIPUnavailableError):
        build_edit(model, "text:a smiling face")


# ------------------------------------------------------------------------------------------- mapper
def _naive_mlp(mlp, x):
    h = x * torch.rsqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)  # over the slice's entries (dim 1)
    for layer in mlp.mapping[1:]:
        w = layer.weight * layer.scale
        h = F.leaky_relu(h @ w.T + layer.bias * layer.lr_mul, 0.2) * math.sqrt(2)
    return h


@pytest.mark.parametrize("n_latent,sizes", [(12, (3, 4, 5)), (16, (3, 4, 9)), (6, (3, 3, 0))])
def test_levels_mapper_split_and_forward(n_latent, sizes):
    torch.manual_seed(0)
    mapper = LevelsMapper(n_latent, 16)
    assert tuple(s.stop - s.start for s in mapper.slices().values()) == sizes
    for p in mapper.parameters():
        p.data.normal_(0, 30)  # away from init (zero biases) so the check sees every term
    w = torch.randn(2, n_latent, 16)
    out = mapper(w)
    assert out.shape == w.shape
    for group, sl in mapper.slices().items():
        if sl.stop > sl.start:
            mlp = getattr(mapper, {"coarse": "course_mapping"}.get(group, f"{group}_mapping"))
            assert isinstance(mlp, LatentMapper)
            torch.testing.assert_close(out[:, sl], _naive_mlp(mlp, w[:, sl]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mapper.edit(w, 2.0), w + 2.0 * 0.1 * out)
    partial = LevelsMapper(n_latent, 16, groups=("coarse", "fine"))
    assert partial(w)[:, mapper.slices()["medium"]].abs().sum() == 0


def test_load_mapper_formats_and_validation(tmp_path):
    torch.manual_seed(0)
    mapper = LevelsMapper(12, 16)
    for p in mapper.parameters():
        p.data.normal_()
    mapper.save(tmp_path / "m.pt")
    loaded = load_mapper(tmp_path / "m.pt", 12, 16)
    w = torch.randn(3, 12, 16)
    torch.testing.assert_close(loaded(w), mapper(w), rtol=0, atol=0)
    # StyleCLIP's layout: 'mapper.' prefix, the generator under 'decoder.', opts; no medium mapper
    sd = {f"mapper.{k}": v for k, v in mapper.state_dict().items() if not k.startswith("medium")}
    sd["decoder.style.1.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": sd, "opts": {"no_medium_mapper": True}}, tmp_path / "styleclip.pt")
    sc = load_mapper(tmp_path / "styleclip.pt", 12, 16)
    assert sc.groups == ("coarse", "fine")
    torch.testing.assert_close(sc(w)[:, :3], mapper(w)[:, :3], rtol=0, atol=0)
    assert sc(w)[:, 3:7].abs().sum() == 0
    with pytest.raises(ValueError, match="n_latent=12"):
        load_mapper(tmp_path / "m.pt", 16, 16)
    bad = dict(sd)
    del bad["mapper.course_mapping.mapping.2.bias"]
    torch.save({"state_dict": bad}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing .*course_mapping.mapping.2.bias"):
        load_mapper(tmp_path / "missing.pt", 12, 16)
    extra = dict(sd)
    extra["mapper.course_mapping.mapping.5.weight"] = torch.zeros(16, 16)
    torch.save({"state_dict": extra}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unexpected .*mapping.5.weight"):
        load_mapper(tmp_path / "extra.pt", 12, 16)
    torch.save({"state_dict": {f"mapper.{k}": v for k, v in LevelsMapper(12, 8).state_dict().items()}},
               tmp_path / "d8.pt")
    with pytest.raises(ValueError, match="style_dim=16"):
        load_mapper(tmp_path / "d8.pt", 12, 16)
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no mapper weights"):
        load_mapper(tmp_path / "other.pt", 12, 16)


# -------------------------------------------------------------------------------- edits on the model
def test_strength_zero_gives_unedited_image(model):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = torch.randn(1, STYLE_DIM)
    with torch.no_grad():
        recon, w, extras = model.invert(x)
        assert (recon - extras["base"]).abs().max() > 1e-3  # the fusion is active
        torch.testing.assert_close(model.edit(x, d, 0.0), recon)
        mapper = LevelsMapper(N_LATENT, STYLE_DIM)
        per_code = LatentEdit("m", per_code=lambda v: 0.1 * mapper(v))
        out = render_edits(model, x, per_code, [0.0, 1.0])
    torch.testing.assert_close(out[0], recon)
    assert (out[1] - recon).abs().max() > 1e-4


def test_linear_edit_of_latents_equals_decode_of_shifted_code(model):
    torch.manual_seed(1)
    w = torch.randn(3, N_LATENT, STYLE_DIM)
    for d in (torch.randn(1, STYLE_DIM), restrict_layers(torch.randn(1, STYLE_DIM), N_LATENT, (1, 4))):
        with torch.no_grad():
            got = model.edit(w, d, [-2.0, 1.5])
            for i, s in enumerate([-2.0, 1.5]):
                torch.testing.assert_close(got[i], model.decode(shift_latents(w, d, s)), rtol=0, atol=0)
    edit = build_edit(model, "sefa:0", EditOptions(layer_range=(0, 2)))
    vecs, _ = sefa_directions(model.generator, layers=[0, 1])
    torch.testing.assert_close(edit.direction[:2], vecs[:1].expand(2, -1), rtol=0, atol=0)
    assert edit.direction[2:].abs().sum() == 0
    with torch.no_grad():
        torch.testing.assert_close(render_edits(model, w, edit, [3.0])[0], model.decode(edit.apply(w, 3.0)))


def test_build_edit_specs(model, tmp_path):
    opts = EditOptions(pca_samples=500)
    g = build_edit(model, "ganspace:2", opts)
    comps, _, std = ganspace_directions(model.generator, 500, 3)
    torch.testing.assert_close(g.direction, std[2] * comps[2:3])
    hfgi = build_edit(model, "ganspace:1,0,3,2", opts)
    assert hfgi.direction is None and hfgi.default_strengths == (0.0, 0.5, 1.0)
    w = torch.randn(2, N_LATENT, STYLE_DIM)
    assert hfgi.directions(w)[:, 3:].abs().sum() == 0
    mapper = LevelsMapper(N_LATENT, STYLE_DIM)
    mapper.save(tmp_path / "m.pt")
    m = build_edit(model, f"mapper:{tmp_path / 'm.pt'}", EditOptions(layer_range=(0, 3)))
    with torch.no_grad():
        expected = torch.cat([0.1 * mapper(w)[:, :3], torch.zeros(2, 3, STYLE_DIM)], dim=1)
        torch.testing.assert_close(m.directions(w), expected)
    np.save(tmp_path / "b.npy", np.ones((1, 512), np.float32))
    with pytest.raises(BoundaryError, match="style_dim=32"):
        build_edit(model, f"boundary:{tmp_path / 'b.npy'}")
    for bad in ("smile.npy", "warp:3", "sefa:", "sefa:x", "ganspace:-1"):
        with pytest.raises(ValueError):
            build_edit(model, bad)
    assert parse_direction('text:"a smiling face"'.replace('"', "")) == ("text", "a smiling face")
    assert parse_layer_range("2:5") == (2, 5) and parse_layer_range("3:") == (3, None)
    with pytest.raises(ValueError, match="START:END"):
        parse_layer_range("3")


# ------------------------------------------------------------------------------------- latents, labels
def test_load_latents_formats_and_errors(tmp_path):
    w = torch.randn(3, N_LATENT, STYLE_DIM)
    torch.save(w[0], tmp_path / "one.pt")
    np.save(tmp_path / "two.npy", w[1:2].numpy())
    torch.save({"names": ["a.png", "sub/b.png", "c.png"], "w_plus": w}, tmp_path / "bundle.pt")
    np.savez(tmp_path / "bundle.npz", names=np.array(["a.png", "b.png", "c.png"]), w_plus=w.numpy())
    torch.save({"x": w[0], "y": w[1:2]}, tmp_path / "dict.pt")
    got = load_latents(tmp_path / "one.pt", N_LATENT, STYLE_DIM)
    assert [n for n, _ in got] == ["one"] and torch.equal(got[0][1], w[0])
    assert torch.equal(load_latents(tmp_path / "two.npy", N_LATENT, STYLE_DIM)[0][1], w[1])
    bundle = load_latents(tmp_path / "bundle.pt", N_LATENT, STYLE_DIM)
    assert [n for n, _ in bundle] == ["a.png", "sub/b.png", "c.png"] and torch.equal(bundle[2][1], w[2])
    npz = load_latents(tmp_path / "bundle.npz", N_LATENT, STYLE_DIM)
    assert [n for n, _ in npz] == ["a.png", "b.png", "c.png"] and torch.equal(npz[1][1], w[1])
    assert [n for n, _ in load_latents(tmp_path / "dict.pt", N_LATENT, STYLE_DIM)] == ["x", "y"]
    torch.save(torch.randn(18, STYLE_DIM), tmp_path / "sg2.pt")
    with pytest.raises(LatentFileError, match="18 W\\+ entries"):
        load_latents(tmp_path / "sg2.pt", N_LATENT, STYLE_DIM)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(LatentFileError, match="cannot read latents"):
        load_latents(tmp_path / "junk.pt", N_LATENT, STYLE_DIM)
    torch.save({"names": ["a"], "w_plus": w}, tmp_path / "mismatch.pt")
    with pytest.raises(LatentFileError, match="1 names for 3 latents"):
        load_latents(tmp_path / "mismatch.pt", N_LATENT, STYLE_DIM)
    with pytest.raises(FileNotFoundError):
        load_latents(tmp_path / "none.pt", N_LATENT, STYLE_DIM)


def test_labels_and_attribute_values(tmp_path):
    recs = [{"file": "000000.png", "has_glasses": True, "smile": 0.5, "hair_colour": "blonde"},
            {"file": "000001.png", "has_glasses": False, "smile": -0.2, "hair_colour": "black"}]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    (tmp_path / "labels.csv").write_text("name,has_glasses,smile,hair_colour\nsub/x.jpg,true,0.5,blonde\n")
    jl = read_labels(tmp_path / "labels.jsonl")
    assert list(jl) == ["000000", "000001"] and name_key("000001.png") == "000001" and name_key("./a/b") == "a/b"
    csv_ = read_labels(tmp_path / "labels.csv")
    assert csv_["sub/x"]["has_glasses"] is True and csv_["sub/x"]["smile"] == 0.5
    assert attribute_value(jl["000000"], "has_glasses") is True
    assert attribute_value(jl["000001"], "smile") == -0.2
    assert attribute_value(jl["000000"], "hair_colour=blonde") is True
    assert attribute_value(jl["000001"], "hair_colour=blonde") is False
    with pytest.raises(ValueError, match="hair_colour=VALUE"):
        attribute_value(jl["000000"], "hair_colour")
    with pytest.raises(KeyError, match="no attribute 'beard'"):
        attribute_value(jl["000000"], "beard")
    assert labels_array([True, False]).dtype == bool and labels_array([True, 0.5]).dtype == np.float64
    (tmp_path / "dup.jsonl").write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[0]) + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        read_labels(tmp_path / "dup.jsonl")
