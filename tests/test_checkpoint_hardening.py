"""Hostile and damaged checkpoints: the integrity hash, and WaGI.load / the scripts refusing in one line
before any allocation a bad file asks for."""
import copy
import os

import pytest
import torch

from tests.helpers import ROOT, load_script, tiny_wagi
from wagi.checkpoint import (
    INTEGRITY_KEY,
    CheckpointError,
    load_checkpoint,
    load_generator,
    payload_digest,
    save_checkpoint,
    save_generator,
)
from wagi.models.swagan import Generator
from wagi.models.wagi import WaGI

torch.set_num_threads(1)


def _flip(path, offset, out):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def test_saved_dicts_carry_a_hash_that_load_checks_and_removes(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"step": 3, "name": "x", "lr": 1e-3}, "ids": [1, 2]}
    path = save_checkpoint(obj, tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    assert raw[INTEGRITY_KEY] == {"algorithm": "sha256", "digest": payload_digest(obj)}
    back = load_checkpoint(path)
    assert INTEGRITY_KEY not in back and back["meta"] == obj["meta"] and torch.equal(back["w"], obj["w"])
    # the hash sees every value: one changed number or one changed weight gives another digest
    assert payload_digest({**obj, "meta": {**obj["meta"], "step": 4}}) != payload_digest(obj)
    w = obj["w"].clone()
    w[1, 2] = torch.nextafter(w[1, 2], torch.tensor(100.0))
    assert payload_digest({**obj, "w": w}) != payload_digest(obj)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint({INTEGRITY_KEY: 1}, tmp_path / "r.pt")


def test_files_without_a_hash_still_load(tmp_path):
    torch.save({"g_ema": {"a": torch.ones(2)}, "latent_avg": torch.zeros(1, 4)}, tmp_path / "old.pt")
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["g_ema"]["a"], torch.ones(2))
    model = WaGI.load(ROOT / "pretrained" / "demo" / "wagi.pt")  # a bundled file written before the hash
    assert model.image_size == 128


def test_every_flipped_byte_is_refused_or_harmless(tmp_path):
    g = Generator(16, style_dim=8, n_mlp=1, channel_multiplier=1, channel_max=8)
    src = save_generator(tmp_path / "g.pt", g, torch.zeros(1, 8))
    saved = torch.load(src, weights_only=True)
    size = src.stat().st_size
    refused = loaded_same = 0
    for offset in range(0, size, max(1, size // 400)):
        bad = _flip(src, offset, tmp_path / "bad.pt")
        try:
            back = load_checkpoint(bad)
        except CheckpointError as err:
            assert "\n" not in str(err) and str(bad) in str(err)
            refused += 1
            continue
        # loaded: then nothing may differ (the byte was in zip metadata that torch does not use)
        assert payload_digest(back) == payload_digest({k: v for k, v in saved.items() if k != INTEGRITY_KEY})
        loaded_same += 1
    assert refused > 200, (refused, loaded_same)  # most bytes are tensor data or pickle: refused


@pytest.fixture(scope="module")
def tiny_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    tiny_wagi().save(path)
    return load_checkpoint(path)


def _variant(tiny_dict, edit):
    ck = copy.deepcopy(tiny_dict)
    edit(ck)
    return ck


HOSTILE = {
    "size_in_config": (lambda c: c["config"]["generator"].update(size=64), "do not match the stored config"),
    "style_dim_in_config": (lambda c: c["config"]["generator"].update(style_dim=64), "do not match"),
    "encoder_width": (lambda c: c["config"]["encoder"].update(width=16), "do not match"),
    "one_shape": (lambda c: c["state_dict"].update({"latent_avg": torch.zeros(3, 3)}), "mis-shaped"),
    "huge_style_dim": (lambda c: c["config"]["generator"].update(style_dim=2 ** 31), "generator.style_dim"),
    "huge_size": (lambda c: c["config"]["generator"].update(size=2 ** 20), "generator.size"),
    "list_state_dict": (lambda c: c.update(state_dict=list(c["state_dict"].values())), "'state_dict' is a list"),
    "string_entry": (lambda c: c["state_dict"].update({"encoder.x": "not a tensor"}), "is a str, not a tensor"),
    "string_latent_avg": (lambda c: c.update(latent_avg="zeros"), "'latent_avg' is 'zeros'"),
    "no_config": (lambda c: c.pop("config"), "'config' is None"),
    "config_is_list": (lambda c: c.update(config=[1, 2]), "'config' is [1, 2]"),
    "bad_latent_avg": (lambda c: c.update(latent_avg=torch.zeros(5)), "'latent_avg' has shape (5,)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_wagi_checkpoints_are_one_line(tmp_path, tiny_dict, name):
    edit, phrase = HOSTILE[name]
    path = tmp_path / f"{name}.pt"
    save_checkpoint(_variant(tiny_dict, edit), path)
    with pytest.raises(CheckpointError) as info:
        WaGI.load(path)
    msg = str(info.value)
    assert phrase in msg and "\n" not in msg and len(msg) < 1500, msg


def test_invert_script_refuses_damaged_and_mismatched_files(tmp_path, tiny_dict, capsys):
    invert = load_script("invert")
    good = tmp_path / "good.pt"
    save_checkpoint(tiny_dict, good)
    raw = torch.load(good, weights_only=True)
    # one flipped bit in the middle of the largest tensor's bytes
    name = max(raw["state_dict"], key=lambda k: raw["state_dict"][k].numel())
    target = raw["state_dict"][name].reshape(-1)[raw["state_dict"][name].numel() // 2].numpy().tobytes()
    data = good.read_bytes()
    offset = data.index(raw["state_dict"][name].reshape(-1)[:16].numpy().tobytes()) + \
        raw["state_dict"][name].numel() // 2 * 4
    assert data[offset:offset + 4] == target
    flipped = _flip(good, offset + 1, tmp_path / "flipped.pt")
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(_variant(tiny_dict, HOSTILE["size_in_config"][0]), mismatched)
    (tmp_path / "in").mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "in" / "a.png")
    for ckpt, phrase in ((flipped, "integrity check failed"), (mismatched, "do not match the stored config")):
        rc = invert.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--ckpt", str(ckpt),
                          "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "out").exists()


def test_generator_loader_refuses_a_flipped_weight(tmp_path):
    g = Generator(16, style_dim=8, n_mlp=1, channel_multiplier=1, channel_max=8)
    src = save_generator(tmp_path / "g.pt", g, torch.zeros(1, 8))
    raw = torch.load(src, weights_only=True)
    w = raw["g_ema"]["style.1.weight"]
    data = src.read_bytes()
    offset = data.index(w.reshape(-1).numpy().tobytes())
    bad = _flip(src, offset + 2, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="integrity check failed"):
        load_generator(bad)
    assert load_generator(src)[0].style_dim == 8
    assert os.path.getsize(bad) == os.path.getsize(src)
