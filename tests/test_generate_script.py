"""scripts/generate.py: the bundled demo generator by default, the generator inside a WaGI model file, exit codes."""
import pytest
import torch
from PIL import Image

from tests.helpers import load_script, tiny_wagi
from wagi.checkpoint import load_generator

torch.set_num_threads(1)
GEN = load_script("generate")


def test_wagi_model_file_gives_its_generator_and_latent_avg(tmp_path):
    model = tiny_wagi()
    model.save(tmp_path / "model.pt")
    generator, latent_avg, info = load_generator(tmp_path / "model.pt")
    assert info["format"] == "wagi_model"
    assert latent_avg.shape == (1, generator.style_dim)
    assert torch.equal(latent_avg[0], model.latent_avg[0].cpu())  # the model's w+ rows are one repeated w
    for name, value in generator.state_dict().items():
        assert torch.equal(value, model.generator.state_dict()[name])


def test_wagi_model_file_samples(tmp_path, capsys):
    tiny_wagi().save(tmp_path / "model.pt")
    out = tmp_path / "grid.png"
    assert GEN.main(["--ckpt", str(tmp_path / "model.pt"), "--n", "4", "--output", str(out), "--device", "cpu"]) == 0
    assert "wagi_model format" in capsys.readouterr().out
    size = load_generator(tmp_path / "model.pt")[0].size
    with Image.open(out) as img:
        assert img.size == (2 * size + 3 * 2, 2 * size + 3 * 2)  # 2x2 grid, save_image's 2-px padding


def test_no_arguments_sample_the_bundled_demo_generator(tmp_path, monkeypatch, capsys):
    assert GEN.DEMO_GENERATOR.is_file(), "the bundled demo generator is part of the repository"
    monkeypatch.chdir(tmp_path)
    assert GEN.main(["--n", "1", "--device", "cpu"]) == 0
    assert "swagan128.pt" in capsys.readouterr().out
    with Image.open(tmp_path / "outputs" / "samples.png") as img:  # under the ignored outputs/ folder
        assert img.size == (128, 128)  # one image: no grid padding


def test_usage_errors_exit_2(tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"x")
    assert GEN.main(["--random", "--n", "1", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert GEN.main(["--ckpt", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "a.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert GEN.main(["--random", "--output", str(tmp_path)]) == 2  # a folder
    with pytest.raises(SystemExit) as exc:
        GEN.main(["--random", "--truncation", "2"])
    assert exc.value.code == 2


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        GEN.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.7)" in text and "(default: outputs/samples.png)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
