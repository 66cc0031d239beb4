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
