import re
from pathlib import Path

import pytest

from wagi.config import ConfigError, all_keys, from_dict, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def _demo(**extra):
    d = {"data": {"demo": True}}
    d.update(extra)
    return d


def test_defaults_and_roundtrip(tmp_path):
    cfg = from_dict(_demo())
    assert cfg.train.lr == 1e-4 and cfg.encoder.kind == "restyle"
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*unknown key"):
        from_dict(_demo(train={"lrr": 1}))
    with pytest.raises(ConfigError, match=r"'bogus'"):
        from_dict(_demo(bogus=1))


def test_wrong_type_and_choice_are_named():
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*integer"):
        from_dict(_demo(train={"batch_size": "eight"}))
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*integer"):
        from_dict(_demo(train={"batch_size": True}))
    with pytest.raises(ConfigError, match=r"'encoder\.kind'.*one of"):
        from_dict(_demo(encoder={"kind": "hyperstyle"}))
    cfg = from_dict(_demo(train={"lr": 1}))  # ints are fine for floats
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'generator\.ckpt'.*not found"):
        from_dict(_demo(generator={"ckpt": str(tmp_path / "nope.pt")}))
    # path checks can be deferred (e.g. to print a config)
    cfg = from_dict(_demo(generator={"ckpt": str(tmp_path / "nope.pt")}), check_paths=False)
    assert cfg.generator.ckpt.endswith("nope.pt")


def test_every_missing_file_is_named_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a checkout without the paper's weights and data
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "wagi_ffhq1024_encoder.yaml")
    text = str(info.value)
    assert text.startswith("5 files or folders not found") and info.value.key == "generator.ckpt"
    for key in ("generator.ckpt", "encoder.weights", "loss.id_weights", "data.train_dir", "data.test_dir"):
        assert f"{key}: " in text


def test_missing_encoder_of_a_shipped_run_says_which_training_comes_first(tmp_path, monkeypatch):
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    monkeypatch.chdir(tmp_path)  # the demo generator is there, no run has been trained
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "demo_wagi.yaml")
    assert info.value.key == "train.encoder_ckpt"
    assert "train demo_wavelet_restyle first: python scripts/train.py --config configs/demo_wavelet_restyle.yaml" \
        in str(info.value)


def test_consistency_rules():
    with pytest.raises(ConfigError, match=r"'encoder\.n_iters'"):
        from_dict(_demo(encoder={"kind": "psp", "n_iters": 5}))
    with pytest.raises(ConfigError, match=r"'fusion\.resolutions'"):
        from_dict(_demo(generator={"size": 128}, fusion={"resolutions": [128]}))
    with pytest.raises(ConfigError, match=r"'data\.train_dir'"):
        from_dict({})


def test_non_positive_training_counts_are_named():
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*>= 1"):
        from_dict(_demo(train={"batch_size": 0}))
    with pytest.raises(ConfigError, match=r"'train\.save_every'.*>= 1"):
        from_dict(_demo(train={"save_every": 0}))
    with pytest.raises(ConfigError, match=r"'train\.max_steps'.*>= 0"):
        from_dict(_demo(train={"max_steps": -1}))


def test_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  demo: true\ntrain:\n  lr: 0.001\n")
    cfg = load_config(p, ["train.lr=2e-4", "fusion.resolutions=[16, 32]", "generator.size=128"])
    assert cfg.train.lr == 2e-4 and cfg.fusion.resolutions == [16, 32] and cfg.generator.size == 128
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(p, ["train.lr"])
    with pytest.raises(ConfigError, match=r"'train\.nope'"):
        load_config(p, ["train.nope=1"])


def test_dotted_override_into_a_mapping_sets_one_entry(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  demo: true\n")
    cfg = load_config(p, ["loss.wavelet_cfg.band_weights.HH=2"])
    assert cfg.loss.wavelet_cfg.band_weights == {"LH": 1.0, "HL": 1.0, "HH": 2.0}
    assert cfg.loss.wavelet_cfg.levels == 1 and cfg.loss.l2 == 1.0  # the rest of the sections: defaults
    cfg = load_config(p, ["loss.wavelet_cfg.band_weights.HH=2", "loss.wavelet_cfg.band_weights.LL=0.5"])
    assert cfg.loss.wavelet_cfg.band_weights == {"LH": 1.0, "HL": 1.0, "HH": 2.0, "LL": 0.5}
    # a mapping given by the file is the base the entry is merged into
    p.write_text("data:\n  demo: true\nloss:\n  wavelet_cfg:\n    band_weights: {HH: 0.5}\n")
    assert load_config(p).loss.wavelet_cfg.band_weights == {"HH": 0.5}
    cfg = load_config(p, ["loss.wavelet_cfg.band_weights.LH=3"])
    assert cfg.loss.wavelet_cfg.band_weights == {"HH": 0.5, "LH": 3.0}
    # a whole-value override still replaces the mapping
    cfg = load_config(p, ["loss.wavelet_cfg.band_weights={HL: 4}"])
    assert cfg.loss.wavelet_cfg.band_weights == {"HL": 4.0}
    # schema sections keep their unknown-key errors; entries are still checked
    with pytest.raises(ConfigError, match=r"'loss\.wavelet_cfg\.bogus'.*unknown key"):
        load_config(p, ["loss.wavelet_cfg.bogus=1"])
    with pytest.raises(ConfigError, match=r"'loss\.wavelet_cfg\.band_weights\.XY'"):
        load_config(p, ["loss.wavelet_cfg.band_weights.XY=1"])
    with pytest.raises(ConfigError, match=r"'loss\.wavelet_cfg\.band_weights\.HH'.*number"):
        load_config(p, ["loss.wavelet_cfg.band_weights.HH=big"])
    with pytest.raises(ConfigError, match=r"'train\.lr'.*not a section"):
        load_config(p, ["train.lr=1", "train.lr.x=2"])


def test_bad_yaml_and_missing_config(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", doc, flags=re.M))
    assert set(all_keys()) == documented


def test_shipped_configs_validate():
    import yaml

    from wagi.training.gan_config import is_gan_config_dict, load_gan_config

    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files, "no configs shipped"
    n_gan = 0
    for f in files:
        if is_gan_config_dict(yaml.safe_load(f.read_text())):
            load_gan_config(f, check_paths=False)
            n_gan += 1
        else:
            load_config(f, check_paths=False)
    assert 0 < n_gan < len(files)


def test_demo_data_options_are_checked_by_key():
    cfg = from_dict(_demo(data={"demo": True, "demo_images": 512, "preload": True, "cache_file": "runs/cache/x.pt"}))
    assert cfg.data.demo_images == 512 and cfg.data.preload and cfg.data.cache_file == "runs/cache/x.pt"
    default = from_dict(_demo())
    assert default.data.demo_images is None and not default.data.preload and default.data.cache_file is None
    # preloading needs a finite set: the error names the key to set
    with pytest.raises(ConfigError, match=r"'data\.demo_images'.*preload"):
        from_dict(_demo(data={"demo": True, "preload": True}))
    with pytest.raises(ConfigError, match=r"'data\.demo_images'.*\[1, 1000000\]"):
        from_dict(_demo(data={"demo": True, "demo_images": 0}))
    with pytest.raises(ConfigError, match=r"'data\.demo_images'.*\[1, 1000000\]"):
        from_dict(_demo(data={"demo": True, "demo_images": 1_000_001}))
    with pytest.raises(ConfigError, match=r"'data\.demo_images'.*data\.demo: true"):
        from_dict({"data": {"train_dir": str(ROOT), "demo_images": 10}})
    with pytest.raises(ConfigError, match=r"'data\.demo_images'.*expected int"):
        from_dict(_demo(data={"demo": True, "demo_images": 1.5}))
    with pytest.raises(ConfigError, match=r"'data\.preload'.*true or false"):
        from_dict(_demo(data={"demo": True, "preload": "yes"}))
    # a folder is finite: preload needs no demo_images there, and the cache file need not exist yet
    cfg = from_dict({"data": {"train_dir": str(ROOT), "preload": True, "cache_file": str(ROOT / "no" / "c.pt")}})
    assert cfg.data.preload


def test_head_channels_key():
    assert from_dict(_demo()).encoder.head_channels is None
    assert from_dict(_demo(encoder={"head_channels": 64})).encoder.head_channels == 64
    with pytest.raises(ConfigError, match=r"'encoder\.head_channels'.*>= 1"):
        from_dict(_demo(encoder={"head_channels": 0}))


# ------------------------------------------------------------------------------------------
# Hostile and out-of-range configs: one ConfigError line naming the key, before any work
# ------------------------------------------------------------------------------------------
BAD_VALUES = [
    ({"train": {"grad_clip": -1.0}}, "train.grad_clip", "> 0"),
    ({"train": {"grad_clip": 0}}, "train.grad_clip", "> 0"),
    ({"generator": {"size": 2 ** 20}}, "generator.size", "power of two from 8 to 4096"),
    ({"generator": {"size": 100}}, "generator.size", "power of two"),
    ({"generator": {"style_dim": 0}}, "generator.style_dim", ">= 1"),
    ({"generator": {"style_dim": 10 ** 9}}, "generator.style_dim", "<= 4096"),
    ({"generator": {"n_mlp": 0}}, "generator.n_mlp", ">= 1"),
    ({"encoder": {"width": 0}}, "encoder.width", ">= 1"),
    ({"encoder": {"input_size": 10 ** 6}}, "encoder.input_size", "<= 4096"),
    ({"loss": {"wavelet_cfg": {"levels": 10}}}, "loss.wavelet_cfg.levels", "<= 8"),
    ({"loss": {"wavelet_cfg": {"levels": 0}}}, "loss.wavelet_cfg.levels", ">= 1"),
    ({"loss": {"loss_size": 96, "wavelet_cfg": {"levels": 6}}}, "loss.wavelet_cfg.levels", "divisible by 64"),
    ({"loss": {"loss_size": -256}}, "loss.loss_size", ">= 1"),
    ({"loss": {"lpips": -0.5}}, "loss.lpips", ">= 0"),
    ({"loss": {"l2": float("nan")}}, "loss.l2", "finite"),
    ({"loss": {"wavelet_cfg": {"band_weights": {"HH": float("inf")}}}}, "loss.wavelet_cfg.band_weights.HH", "finite"),
    ({"train": {"betas": []}}, "train.betas", "two numbers"),
    ({"train": {"betas": [0.9, 1.5]}}, "train.betas", "two numbers"),
    ({"train": {"lr": 0}}, "train.lr", "> 0"),
    ({"train": {"lr": "nan"}}, "train.lr", "finite"),
    ({"train": {"weight_decay": -1}}, "train.weight_decay", ">= 0"),
    ({"train": {"val_batches": 0}}, "train.val_batches", ">= 1"),
    ({"fusion": {"levels": 0}}, "fusion.levels", ">= 1"),
    ({"fusion": {"kind": "wavelet", "levels": 5, "resolutions": [8, 16]}, "generator": {"size": 32}},
     "fusion.levels", "divisible by 16"),
    ({"fusion": {"width": 0}}, "fusion.width", ">= 1"),
    ({"fusion": {"aligner": {"aug_prob": 2}}}, "fusion.aligner.aug_prob", "<= 1"),
    ({"data": {"demo": True, "image_size": 0}}, "data.image_size", ">= 8"),
    ({"fusion": {"cascade": True, "source": "input"}}, "fusion.cascade", "fusion.source: residual"),
    ({"fusion": {"cascade": True, "kind": "feature"}}, "fusion.cascade", "fusion.kind: wavelet"),
    ({"fusion": {"edit_aug": {"prob": 1.5}}}, "fusion.edit_aug.prob", "<= 1"),
    ({"fusion": {"edit_aug": {"prob": 0.5}}}, "fusion.edit_aug.prob", "train.stage 'fusion' or 'joint'"),
    ({"fusion": {"edit_aug": {"prob": 0.5}}, "train": {"stage": "fusion"}, "loss": {"edit_aug": 0}},
     "loss.edit_aug", "positive weight"),
    ({"fusion": {"kind": "none", "edit_aug": {"prob": 0.5}}, "train": {"stage": "joint"}}, "fusion.edit_aug.prob",
     "fusion.kind is 'none'"),
    ({"fusion": {"edit_aug": {"strength": [4.0, 2.0]}}}, "fusion.edit_aug.strength", "0 <= lo <= hi"),
    ({"fusion": {"edit_aug": {"strength": [1.0]}}}, "fusion.edit_aug.strength", "[lo, hi]"),
    ({"fusion": {"edit_aug": {"sources": []}}}, "fusion.edit_aug.sources", "at least one"),
    ({"fusion": {"edit_aug": {"sources": ["sefa", "shipped"]}}}, "fusion.edit_aug.sources[1]", "one of"),
    ({"fusion": {"edit_aug": {"sources": ["sefa", "sefa"]}}}, "fusion.edit_aug.sources[1]", "at most once"),
    ({"fusion": {"edit_aug": {"sefa_components": 0}}}, "fusion.edit_aug.sefa_components", ">= 1"),
    ({"fusion": {"edit_aug": {"sefa_components": 600}}}, "fusion.edit_aug.sefa_components", "<= 512"),
    ({"fusion": {"edit_aug": {"mask": [0.06, 0.02, 1]}}}, "fusion.edit_aug.mask", "hi > lo"),
    ({"fusion": {"edit_aug": {"mask": [0.02, 0.06, 1.5]}}}, "fusion.edit_aug.mask", "integer in [0, 32]"),
    ({"loss": {"edit_aug": -1}}, "loss.edit_aug", ">= 0"),
    ({"loss": {"lattice": -1}}, "loss.lattice", ">= 0"),
    ({"loss": {"lattice": 1.0, "loss_size": 8}}, "loss.lattice_periods[2]", "does not fit"),
    ({"experiment": {"name": "../elsewhere"}}, "experiment.name", "one folder name"),
    ({"experiment": {"name": ""}}, "experiment.name", "one folder name"),
]


@pytest.mark.parametrize("extra,key,phrase", BAD_VALUES, ids=[k for _, k, _ in BAD_VALUES])
def test_out_of_range_values_name_the_key(extra, key, phrase):
    data = _demo()
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as info:
        from_dict(data, check_paths=False)
    assert info.value.key == key and phrase in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_run_location_paths_are_checked(tmp_path):
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"'experiment\.out_dir'.*is a file, not a folder"):
        from_dict(_demo(experiment={"out_dir": str(a_file)}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "wagi").write_text("x")
    with pytest.raises(ConfigError, match=r"'experiment\.name'.*is a file, not a run folder"):
        from_dict(_demo(experiment={"out_dir": str(tmp_path / "out")}))
    with pytest.raises(ConfigError, match=r"'data\.cache_file'.*is a folder"):
        from_dict({"data": {"demo": True, "demo_images": 4, "preload": True, "cache_file": str(tmp_path)}})


def test_gan_config_ranges(tmp_path):
    from wagi.training.gan_config import gan_from_dict

    base = {"data": {"demo": True}, "discriminator": {}}
    for extra, key in [({"generator": {"size": 2 ** 16}}, "generator.size"),
                       ({"generator": {"style_dim": 10 ** 8}}, "generator.style_dim"),
                       ({"discriminator": {"channel_multiplier": 10 ** 6}}, "discriminator.channel_multiplier"),
                       ({"train": {"lr": float("inf")}}, "train.lr"),
                       ({"train": {"betas": []}}, "train.betas"),
                       ({"experiment": {"out_dir": str(tmp_path / "f.txt")}}, "experiment.out_dir")]:
        (tmp_path / "f.txt").write_text("x")
        data = {**base, **extra}
        with pytest.raises(ConfigError) as info:
            gan_from_dict(data, check_paths=False)
        assert info.value.key == key, str(info.value)


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_yaml_bombs_and_odd_files_are_one_line(tmp_path):
    import time

    cases = {
        "laughs.yaml": (BILLION_LAUGHS.encode(), "expands to more than 100000 values"),
        "recursive.yaml": (b"train: &t {lr: 0.1, again: *t}\n", "recursive"),
        "deep.yaml": (b"[" * 20000 + b"]" * 20000, "nested more than 64 levels"),
        "deep_map.yaml": (b"".join(b"  " * i + b"k:\n" for i in range(200)), "nested more than 64 levels"),
        "list.yaml": (b"- 1\n- 2\n", "mapping of sections at the top level, got a list"),
        "number.yaml": (b"42\n", "got a int"),
        "string.yaml": (b"hello\n", "got a str"),
        "latin1.yaml": ("train: {lr: 0.1}  # caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
        "huge.yaml": (b"# " + b"x" * (2 << 20) + b"\n", "larger than 1048576 bytes"),
        "unclosed.yaml": (b"train: [unclosed\n" + b"x" * 5000, "not valid YAML"),
        "control.yaml": (b"train: {lr: 0.1}\x07\n", "not valid YAML"),
    }
    for name, (content, phrase) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            load_config(path)
        msg = str(info.value)
        assert phrase in msg and "\n" not in msg and len(msg) <= 510, (name, msg[:300])
        assert time.perf_counter() - start < 5, name
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(tmp_path)


def test_override_values_are_bounded_too(tmp_path):
    import time

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  demo: true\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(p, ["train.betas=" + BILLION_LAUGHS.replace("\n", ", ").join("{}")])
    assert "expands to more than" in str(info.value) and info.value.key == "train.betas"
    assert time.perf_counter() - start < 5
    for raw in ("\udcff\udcfe", "0.1\x00", "\x07"):  # undecodable bytes of argv, NUL, a control character
        with pytest.raises(ConfigError, match=r"'train\.lr': cannot parse value .*not valid YAML"):
            load_config(p, ["train.lr=" + raw])
    with pytest.raises(ConfigError) as info:
        load_config(p, ["train.lr=" + "x" * 100_000])
    assert len(str(info.value)) <= 510 and "'train.lr'" in str(info.value)
    # ordinary anchors and merges still work
    p.write_text("data: {demo: true}\nloss: {wavelet_cfg: {band_weights: &w {LH: 2, HL: 2}}}\n"
                 "fusion: {resolutions: &r [16, 32]}\nencoder: {width: 4}\ntrain: {betas: [0.5, 0.9]}\n")
    assert load_config(p).loss.wavelet_cfg.band_weights == {"LH": 2.0, "HL": 2.0}
    p.write_text("data: {demo: true}\nfusion: {resolutions: &r [16, 32]}\nextra_sizes: *r\n")
    with pytest.raises(ConfigError, match="'extra_sizes': unknown key"):  # the alias resolved, then validated
        load_config(p)


def test_train_script_refuses_a_hostile_config_in_one_line(tmp_path):
    import subprocess
    import sys

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(bomb)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "expands to more than 100000 values" in out.stderr
