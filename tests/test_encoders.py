import pytest
import torch
import torchvision

from wagi.models import backbones as bb
from wagi.models.encoders import (
    BackboneEncoder,
    Encoder4Editing,
    GradualStyleEncoder,
    build_encoder,
    latent_resolutions,
    psp_encoder_keys_to_wagi,
    style_split,
)

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def documented_irse50_keys():
    """The 385 trunk keys of model_ir_se50.pth, written out from the published layout."""
    keys = ["input_layer.0.weight"] + [f"input_layer.1.{s}" for s in BN_KEYS] + ["input_layer.2.weight"]
    units = [(64, 64)] * 3 + [(64, 128)] + [(128, 128)] * 3 + [(128, 256)] + [(256, 256)] * 13
    units += [(256, 512)] + [(512, 512)] * 2
    for i, (cin, depth) in enumerate(units):
        p = f"body.{i}."
        if cin != depth:
            keys += [p + "shortcut_layer.0.weight"] + [p + f"shortcut_layer.1.{s}" for s in BN_KEYS]
        keys += [p + f"res_layer.0.{s}" for s in BN_KEYS]
        keys += [p + "res_layer.1.weight", p + "res_layer.2.weight", p + "res_layer.3.weight"]
        keys += [p + f"res_layer.4.{s}" for s in BN_KEYS]
        keys += [p + "res_layer.5.fc1.weight", p + "res_layer.5.fc2.weight"]
    return keys


def arcface_head_keys():
    return ([f"output_layer.0.{s}" for s in BN_KEYS] + ["output_layer.3.weight", "output_layer.3.bias"]
            + [f"output_layer.4.{s}" for s in BN_KEYS])


def randomise_(module, seed=0):
    """Random weights AND BN statistics, so a copy is distinguishable from a fresh init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions on shared cores run far faster single-threaded (no spin-waiting between threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def irse50_file(tmp_path_factory):
    """A synthetic model_ir_se50.pth: the state_dict of a randomised ArcFace IR-SE50."""
    arcface = randomise_(bb.IRSEBackboneArcFace())
    path = tmp_path_factory.mktemp("weights") / "model_ir_se50.pth"
    state = {k: v.clone() for k, v in arcface.state_dict().items()}
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def irse50_encoder():
    """The one IR-SE50 encoder of this module: 64 px input, narrow heads (the trunk is the real 385-key IR-SE50)."""
    torch.manual_seed(0)
    return build_encoder("psp", "ir_se50", n_latent=12, image_size=64, style_dim=32, head_channels=32)


# ------------------------------------------------------------------------------------------------
# coarse / middle / fine split


def test_latent_resolutions_and_split():
    assert latent_resolutions(12) == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 128]
    assert latent_resolutions(16)[-5:] == [256, 256, 512, 512, 512]
    assert style_split(12) == (3, 7)  # SWAGAN-256: 3 / 4 / 5
    assert style_split(16) == (3, 7)  # SWAGAN-1024: 3 / 4 / 9
    assert style_split(18) == (3, 7)  # StyleGAN2-1024: pSp's coarse_ind 3, middle_ind 7
    assert style_split(8) == (3, 8)  # SWAGAN-64: no fine entries
    with pytest.raises(ValueError, match="n_latent"):
        style_split(1)


def test_psp_heads_read_the_split_maps():
    torch.manual_seed(0)
    enc = build_encoder("psp", "small", n_latent=12, image_size=64).eval()
    # c3 / p2 / p1 are 4 / 8 / 16 px at 64 px input: 2 / 3 / 4 stride-2 convs down to 1x1
    n_convs = [sum(isinstance(m, torch.nn.Conv2d) for m in s.convs) for s in enc.styles]
    assert n_convs == [2] * 3 + [3] * 4 + [4] * 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = enc(x)
        enc.latlayer2.weight.add_(1.0)  # lateral of c1: only p1 (fine entries 7..11) changes
        out = enc(x)
        assert torch.equal(out[:, :7], ref[:, :7]) and (out[:, 7:] - ref[:, 7:]).abs().min() > 0
        enc.latlayer1.weight.add_(1.0)  # lateral of c2: p2 and p1 change, coarse entries do not
        out2 = enc(x)
        assert torch.equal(out2[:, :3], ref[:, :3]) and (out2[:, 3:7] - ref[:, 3:7]).abs().min() > 0


def test_head_depth_follows_image_size():
    enc = build_encoder("psp", "small", n_latent=12, image_size=128, style_dim=16)
    n_convs = [sum(isinstance(m, torch.nn.Conv2d) for m in s.convs) for s in enc.styles]
    assert n_convs == [3] * 3 + [4] * 4 + [5] * 5
    assert enc(torch.randn(1, 3, 128, 128)).shape == (1, 12, 16)


def test_small_generator_without_fine_entries_has_no_c1_lateral():
    enc = build_encoder("psp", "small", n_latent=8, image_size=64, style_dim=16)
    assert hasattr(enc, "latlayer1") and not hasattr(enc, "latlayer2")
    assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 8, 16)


# ------------------------------------------------------------------------------------------------
# shapes, factory, validation


@pytest.mark.parametrize("kind,cls,input_nc", [
    ("psp", GradualStyleEncoder, 3), ("e4e", Encoder4Editing, 3),
    ("restyle", BackboneEncoder, 6), ("restyle_e4e", Encoder4Editing, 6),
])
@pytest.mark.parametrize("n_latent", [12, 16])
def test_output_shapes_small_backbone(kind, cls, input_nc, n_latent):
    enc = build_encoder(kind, "small", n_latent=n_latent, image_size=64)
    assert isinstance(enc, cls) and enc.input_nc == input_nc
    out = enc(torch.randn(2, input_nc, 64, 64))
    assert out.shape == (2, n_latent, 512) and out.dtype == torch.float32


def test_backbone_taps_have_the_documented_sizes():
    for backbone, channels in (("small", (32, 64, 128)), ("resnet34", (128, 256, 512))):
        trunk = bb.build_backbone(backbone, input_nc=6)
        feats = trunk(torch.randn(1, 6, 64, 64))
        assert trunk.out_channels == channels
        assert [tuple(f.shape[1:]) for f in feats] == [(channels[0], 16, 16), (channels[1], 8, 8), (channels[2], 4, 4)]


@pytest.mark.parametrize("backbone", ["small", "resnet34"])
def test_psp_family_key_layout_converts_to_ours(backbone):
    enc = build_encoder("e4e", backbone, n_latent=8, image_size=32, style_dim=8, head_channels=8)
    psp_layout = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in enc.state_dict().items()}
    assert any(k.startswith("styles.0.convs.0.") for k in psp_layout) and "latlayer1.weight" in psp_layout
    converted = psp_encoder_keys_to_wagi(psp_layout)
    assert list(converted) == list(enc.state_dict())
    enc.load_state_dict(converted, strict=True)


def test_encoder_follows_input_dtype():
    enc = build_encoder("psp", "small", n_latent=4, image_size=32, style_dim=8).double()
    assert enc(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown encoder kind"):
        build_encoder("hyperstyle", "small", 12)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_encoder("psp", "resnet50", 12)
    with pytest.raises(ValueError, match="does not take option"):
        build_encoder("psp", "small", 12, image_size=64, num_layers=50)
    with pytest.raises(ValueError, match="power of two"):
        build_encoder("psp", "small", 12, image_size=96)
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        build_encoder("psp", "small", 12, image_size=16)
    enc = build_encoder("psp", "small", 12, image_size=64, style_dim=8)
    with pytest.raises(ValueError, match=r"expects \(N, 3, 64, 64\)"):
        enc(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"expects \(N, 3, 64, 64\)"):
        enc(torch.randn(1, 6, 64, 64))


@pytest.mark.parametrize("kind", ["psp", "e4e", "restyle", "restyle_e4e"])
def test_gradients_reach_every_trainable_parameter(kind):
    torch.manual_seed(1)
    enc = build_encoder(kind, "small", n_latent=12, image_size=64, style_dim=32)
    x = torch.randn(2, enc.input_nc, 64, 64)
    (enc(x) * torch.randn(2, 12, 32)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts_match_the_psp_family():
    # built on the meta device: shapes only, no memory; numbers of pSp / ReStyle at 256 px with 512-d heads
    with torch.device("meta"):
        psp12 = build_encoder("psp", "ir_se50", 12)
        restyle12 = build_encoder("restyle", "ir_se50", 12)
        restyle16 = build_encoder("restyle", "ir_se50", 16)
        arcface = bb.IRSEBackboneArcFace()

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert round(count(psp12) / 1e6, 1) == 180.6
    assert round(count(restyle12) / 1e6, 1) == 147.4
    assert round(count(restyle16) / 1e6, 1) == 186.2
    assert count(arcface) == 43_797_696


# ------------------------------------------------------------------------------------------------
# IR-SE50 layout and loading


def test_irse50_keys_strides_and_taps(irse50_encoder):
    trunk = irse50_encoder.backbone
    state = trunk.state_dict()
    assert list(state) == documented_irse50_keys() and len(state) == 385
    assert [k for k in irse50_encoder.state_dict() if k.startswith("backbone.")] == ["backbone." + k for k in state]
    assert state["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert state["body.23.res_layer.5.fc1.weight"].shape == (32, 512, 1, 1)
    strides = [unit.res_layer[3].stride[0] for unit in trunk.body]
    assert [i for i, s in enumerate(strides) if s == 2] == [0, 3, 7, 21]
    assert trunk.tap_indices == (6, 20, 23)
    feats = trunk(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_arcface_module_has_the_file_layout():
    with torch.device("meta"):
        arcface = bb.IRSEBackboneArcFace()
    assert sorted(arcface.state_dict()) == sorted(documented_irse50_keys() + arcface_head_keys())
    assert len(arcface.state_dict()) == 397
    assert arcface.state_dict()["output_layer.3.weight"].shape == (512, 512 * 7 * 7)


def test_irse50_file_into_encoder_ignores_output_layer_and_copies_exactly(irse50_encoder, irse50_file):
    path, file_state = irse50_file
    report = bb.load_irse50_weights(irse50_encoder, path)
    assert sorted(report.ignored) == sorted(arcface_head_keys())
    assert len(report.loaded) == 385 and report.ok
    assert not (report.adapted or report.missing or report.unexpected or report.kept_init)
    for key, value in irse50_encoder.backbone.state_dict().items():
        assert torch.equal(value, file_state[key]), key
    assert "ignored on purpose 12" in report.summary()


def test_arcface_from_pretrained_is_strict_frozen_and_normalised(irse50_file):
    path, file_state = irse50_file
    model = bb.IRSEBackboneArcFace.from_pretrained(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, file_state[k]) for k, v in model.state_dict().items())
    emb = model(torch.randn(2, 3, 112, 112))
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="112x112"):
        model(torch.randn(1, 3, 64, 64))


def test_six_channel_stem_gets_rgb_filters_and_keeps_its_init_elsewhere(irse50_file):
    path, file_state = irse50_file
    trunk = bb.IRSEBackbone(input_nc=6)
    before = trunk.input_layer[0].weight.detach().clone()
    report = bb.load_irse50_weights(trunk, path)
    assert report.adapted == ["input_layer.0.weight"] and report.ok
    w = trunk.input_layer[0].weight
    assert w.shape == (64, 6, 3, 3)
    assert torch.equal(w[:, :3], file_state["input_layer.0.weight"])
    assert torch.equal(w[:, 3:], before[:, 3:])
    assert torch.equal(trunk.body[23].res_layer[5].fc2.weight, file_state["body.23.res_layer.5.fc2.weight"])


def test_missing_weight_files_name_path_and_source(tmp_path):
    missing = tmp_path / "nowhere" / "model_ir_se50.pth"
    with pytest.raises(FileNotFoundError) as err:
        bb.load_irse50_weights(bb.SmallBackbone(), missing)
    assert str(missing) in str(err.value) and "pixel2style2pixel" in str(err.value)
    with pytest.raises(FileNotFoundError, match="resnet34-b627a593.pth"):
        bb.load_resnet34_weights(bb.ResNet34Backbone(), tmp_path / "r34.pth")


def test_foreign_and_partial_files_are_reported(tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ValueError, match="matches none"):
        bb.load_irse50_weights(bb.SmallBackbone(), foreign)

    with_se = tmp_path / "small_se.pth"
    torch.save(randomise_(bb.SmallBackbone(mode="ir_se")).state_dict(), with_se)
    target = bb.SmallBackbone(mode="ir")
    with pytest.raises(ValueError, match="unexpected 8"):
        bb.load_irse50_weights(target, with_se)
    report = bb.load_irse50_weights(target, with_se, strict=False)
    assert sorted(report.unexpected) == sorted(f"body.{i}.res_layer.5.fc{j}.weight" for i in range(4) for j in (1, 2))
    assert not report.missing and len(report.loaded) == len(target.state_dict())

    wider = tmp_path / "wider.pth"
    torch.save(bb.SmallBackbone(channels=(16, 32, 64, 256)).state_dict(), wider)
    with pytest.raises(ValueError, match="shape mismatches"):
        bb.load_irse50_weights(bb.SmallBackbone(), wider)


# ------------------------------------------------------------------------------------------------
# ResNet-34


def test_resnet34_key_map():
    assert bb.resnet34_key_map("layer1.0.conv1.weight") == "body.0.conv1.weight"
    assert bb.resnet34_key_map("layer3.5.bn2.running_var") == "body.12.bn2.running_var"
    assert bb.resnet34_key_map("layer4.0.downsample.1.weight") == "body.13.downsample.1.weight"
    assert bb.resnet34_key_map("bn1.bias") == "bn1.bias"
    assert bb.resnet34_key_map("fc.weight") is None


def test_resnet34_state_dict_loads_mapped_and_computes_like_torchvision(tmp_path):
    torch.manual_seed(0)
    tv = randomise_(torchvision.models.resnet34(weights=None)).eval()
    path = tmp_path / "resnet34.pth"
    torch.save(tv.state_dict(), path)
    enc = build_encoder("restyle", "resnet34", n_latent=4, image_size=32, style_dim=8, weights=str(path))
    trunk = enc.backbone.eval()
    assert trunk.input_nc == 6
    before_prelu = trunk.relu.weight.detach().clone()
    report = bb.load_resnet34_weights(enc, path)  # the factory loaded it already; reload to read the report
    assert report.ok and report.adapted == ["conv1.weight"]
    assert report.ignored == ["fc.weight", "fc.bias"] and report.kept_init == ["relu.weight"]
    assert len(report.loaded) + 1 == len(tv.state_dict()) - 2
    assert torch.equal(trunk.relu.weight, before_prelu)
    tv_state = tv.state_dict()
    for key, value in tv_state.items():
        mapped = bb.resnet34_key_map(key)
        if mapped == "conv1.weight":
            assert torch.equal(trunk.conv1.weight[:, :3], value)
        elif mapped is not None:
            assert torch.equal(trunk.state_dict()[mapped], value), key
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        stem = trunk.relu(trunk.bn1(trunk.conv1(x)))
        c1 = tv.layer2(tv.layer1(stem))
        c3 = tv.layer4(tv.layer3(c1))
        feats = trunk(x)
    torch.testing.assert_close(feats.c1, c1, rtol=0, atol=0)
    torch.testing.assert_close(feats.c3, c3, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# e4e


def test_e4e_zero_deltas_give_the_broadcast_base():
    torch.manual_seed(0)
    enc = build_encoder("e4e", "small", n_latent=12, image_size=64, style_dim=16).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        w0 = enc.styles[0](enc.backbone(x).c3)
        full = enc(x)
        assert (full[:, 1:] - w0[:, None]).abs().amin() > 0
        for style in enc.styles[1:]:
            style.linear.weight.zero_()
            style.linear.bias.zero_()
        assert torch.equal(enc(x), w0[:, None].expand(2, 12, 16))


def test_e4e_progressive_stage():
    torch.manual_seed(0)
    enc = build_encoder("e4e", "small", n_latent=12, image_size=64, style_dim=16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = enc(x)
        enc.set_progressive_stage(4)
        out = enc(x)
    assert torch.equal(out[:, :5], full[:, :5])
    assert torch.equal(out[:, 5:], full[:, :1].expand(1, 7, 16))
    with pytest.raises(ValueError, match="progressive_stage"):
        enc.set_progressive_stage(12)
