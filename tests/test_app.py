"""The interactive page (wagi/app.py, scripts/app.py): the engine with the bundled demo model, and the page's
API driven by gradio_client against a server on 127.0.0.1 (skipped where Gradio is not installed).

The browser test lives in tests/test_app_browser.py."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.badfiles import make_corpus
from tests.helpers import ROOT
from wagi.app import AppEngine, InversionCache, bundled_models, example_images
from wagi.imageio import ImageIOError, load_image
from wagi.metrics import psnr

EXAMPLE = ROOT / "examples" / "demo_1002000.png"
OTHER_EXAMPLE = ROOT / "examples" / "demo_1002006.png"
MIN_RECON_PSNR = 24.0  # dB; the demo model reconstructs its held-out faces at ~26 dB (docs/results.md)
MIN_EDIT_CHANGE = 0.01  # mean |Δ| in [-1, 1] units that a full-strength shipped edit must exceed


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return AppEngine(bundled_models(), download_dir=tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def inverted(engine):
    return engine.invert("wagi", EXAMPLE, InversionCache())


def _glasses(engine):
    return next(s for s in engine.sliders if s.key == "shipped:glasses")


def test_app_lists_bundled_models_examples_and_sliders(engine):
    assert engine.model_names[0] == "wagi" and set(engine.model_names) >= {"wagi", "hfgi", "l2_restyle"}
    assert EXAMPLE in example_images()
    keys = [s.key for s in engine.sliders]
    assert {"shipped:glasses", "shipped:mouth_open", "sefa:0", "sefa:3"} <= set(keys)
    assert _glasses(engine).limit == 2 * 8.0  # twice the documented strength of the manifest


def test_app_invert_reconstructs_the_input(engine, inverted):
    x = load_image(EXAMPLE, 128).unsqueeze(0)
    assert torch.equal(inverted.x, x)
    assert float(psnr(x, inverted.recon)[0]) > MIN_RECON_PSNR
    assert float(psnr(x, inverted.recon)[0]) > float(psnr(x, inverted.base)[0])  # the fusion helps
    table = engine.metrics(inverted)
    assert "L2 LL" in table and "L2 HH1" in table and "PSNR" in table


def test_app_edit_zero_is_the_reconstruction_and_sliders_add_up(engine, inverted):
    image, w = engine.edit(inverted, {s.key: 0.0 for s in engine.sliders})
    assert torch.equal(image, inverted.recon) and torch.equal(w, inverted.w_plus)
    image, _ = engine.edit(inverted, {}, fuse=False)
    assert torch.equal(image, inverted.base)
    dirs = engine.directions("wagi")
    w = engine.edited_latent(inverted, {"shipped:glasses": 4.0, "sefa:1": -2.0})
    torch.testing.assert_close(w, inverted.w_plus + 4.0 * dirs["shipped:glasses"] - 2.0 * dirs["sefa:1"])
    image, w_edit = engine.edit(inverted, {"shipped:glasses": 8.0})
    assert (image - inverted.recon).abs().mean() > MIN_EDIT_CHANGE
    model = engine.model("wagi")
    expected = model.render_edit(inverted.w_plus, dirs["shipped:glasses"], 8.0, x=inverted.x, base=inverted.base)
    torch.testing.assert_close(image, expected)
    torch.testing.assert_close(w_edit, inverted.w_plus + 8.0 * dirs["shipped:glasses"])


def test_app_downloads_are_a_png_and_a_plain_latent_tensor(engine, inverted):
    cache = InversionCache()
    image, w = engine.edit(inverted, {"sefa:0": 3.0})
    png, pt = engine.write_downloads(cache, image, w)
    assert Path(png).name == "wagi_result.png" and cache.session_id in png
    assert (load_image(png, None) - image[0].clamp(-1, 1)).abs().max() <= 1.0 / 127.5 + 1e-6  # 8-bit rounding only
    latent = torch.load(pt, weights_only=True)
    assert latent.shape == (10, 256) and latent.dtype == torch.float32
    torch.testing.assert_close(latent, w[0])


def test_app_caches_inversions_per_session(engine, inverted):
    a, b = InversionCache(capacity=2), InversionCache(capacity=2)
    first = engine.invert("wagi", EXAMPLE, a)
    assert engine.invert("wagi", EXAMPLE, a) is first  # a slider move re-uses the inversion
    assert len(b) == 0 and a.session_id != b.session_id
    engine.invert("wagi", OTHER_EXAMPLE, b)
    assert len(a) == 1 and len(b) == 1
    torch.testing.assert_close(first.recon, inverted.recon)


def test_app_bad_files_give_one_line_naming_the_file(engine, tmp_path):
    _, bad = make_corpus(str(tmp_path))
    assert len(bad) >= 5
    for path, reason in bad.items():
        with pytest.raises(ImageIOError) as info:
            engine.invert("wagi", path, InversionCache())
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{os.path.basename(path)}: cannot read image")
        assert reason in message and str(tmp_path) not in message  # no server paths in the page


def test_app_unknown_model_is_refused(engine):
    with pytest.raises(ValueError, match="unknown model"):
        engine.model("nope")


# --------------------------------------------------------------------------------------- the API
try:
    import gradio  # noqa: F401
    import gradio_client
except ImportError:  # the engine tests above still run
    gradio_client = None
needs_gradio = pytest.mark.skipif(gradio_client is None, reason="the page needs Gradio and gradio_client: "
                                  "pip install -e '.[app]' gradio_client")


@pytest.fixture(scope="module")
def server(engine):
    from wagi.app import build_app, launch

    demo = build_app(engine, example_images())
    launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture()
def client(server):
    return gradio_client.Client(server.local_url, verbose=False)


def _read(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


@needs_gradio
def test_api_serves_local_only_with_named_endpoints(server, client):
    assert server.server_name == "127.0.0.1" and not server.share
    # the examples are served whatever the working directory (Gradio serves only cwd and temp by default)
    assert str(ROOT / "examples") in [str(p) for p in server.allowed_paths]
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/invert" in api and "/edit" in api
    names = [p["parameter_name"] for p in api["/edit"]["parameters"]]
    assert names[:3] == ["path", "model_name", "fuse"] and "glasses" in names and "sefa_0" in names


@needs_gradio
def test_api_invert_returns_a_reconstruction_close_to_the_input(client):
    shown, recon, unfused, table, subbands, latent = client.predict(
        gradio_client.handle_file(EXAMPLE), "wagi", api_name="/invert")
    x = load_image(EXAMPLE, 128).unsqueeze(0)
    assert float(psnr(x, _read(recon).unsqueeze(0))[0]) > MIN_RECON_PSNR
    assert float(psnr(x, _read(shown).unsqueeze(0))[0]) > 45  # the input as the model sees it (PNG, exact)
    assert "PSNR" in table and Image.open(subbands).size[0] > 300
    assert torch.load(latent, weights_only=True).shape == (10, 256)


@needs_gradio
def test_api_edit_changes_the_image(client):
    image = gradio_client.handle_file(EXAMPLE)
    still = client.predict(image, "wagi", True, api_name="/edit")
    moved = client.predict(image, "wagi", True, glasses=16.0, api_name="/edit")
    a, b = _read(still[0]), _read(moved[0])
    assert (a - b).abs().mean() > MIN_EDIT_CHANGE
    assert torch.load(moved[3], weights_only=True).shape == (10, 256)


@needs_gradio
def test_api_bad_upload_is_a_message_and_the_server_keeps_serving(client, tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(gradio_client.exceptions.AppError, match="notes.png: cannot read image: not a supported image"):
        client.predict(gradio_client.handle_file(junk), "wagi", api_name="/invert")
    _, bad = make_corpus(str(tmp_path / "corpus"))
    for path, reason in bad.items():  # huge (bomb, large header), truncated, corrupt, odd values, tiny, empty
        if not os.path.isfile(path):
            continue
        expected = re.escape(f"{os.path.basename(path)}: cannot read image") + ".*" + re.escape(reason)
        with pytest.raises(gradio_client.exceptions.AppError, match=expected):
            client.predict(gradio_client.handle_file(path), "wagi", True, api_name="/edit")
    recon = client.predict(gradio_client.handle_file(EXAMPLE), "wagi", api_name="/invert")[1]
    assert float(psnr(load_image(EXAMPLE, 128).unsqueeze(0), _read(recon).unsqueeze(0))[0]) > MIN_RECON_PSNR


@needs_gradio
def test_api_sessions_keep_their_own_images(server):
    a = gradio_client.Client(server.local_url, verbose=False)
    b = gradio_client.Client(server.local_url, verbose=False)
    a.predict(gradio_client.handle_file(EXAMPLE), "wagi", api_name="/invert")
    out_b = b.predict(gradio_client.handle_file(OTHER_EXAMPLE), "wagi", True, api_name="/edit")[0]
    out_a = a.predict(gradio_client.handle_file(EXAMPLE), "wagi", True, api_name="/edit")[0]
    mine, theirs = load_image(OTHER_EXAMPLE, 128), load_image(EXAMPLE, 128)
    assert (_read(out_b) - mine).pow(2).mean() < (_read(out_b) - theirs).pow(2).mean()
    assert (_read(out_a) - theirs).pow(2).mean() < (_read(out_a) - mine).pow(2).mean()


@needs_gradio
def test_app_script_refuses_a_missing_checkpoint(capsys):
    from tests.helpers import load_script

    app = load_script("app")
    assert app.main(["--model", "no/such/model.pt"]) == 2
    assert "no/such/model.pt: file not found" in capsys.readouterr().err
    assert app.build_parser().parse_args([]).host == "127.0.0.1"


@pytest.mark.parametrize("name", ["hfgi", "l2_restyle", "wavelet_restyle"])
def test_app_every_bundled_model_inverts_and_edits(engine, name):
    inv = engine.invert(name, EXAMPLE, InversionCache())
    assert inv.model == name and inv.recon.shape == (1, 3, 128, 128) and torch.isfinite(inv.recon).all()
    assert set(engine.directions(name)) == {s.key for s in engine.sliders}  # one generator: every slider applies
    image, _ = engine.edit(inv, {"shipped:glasses": 8.0})
    assert (image - inv.recon).abs().mean() > MIN_EDIT_CHANGE


def test_app_cache_knows_an_image_by_its_bytes(engine, tmp_path):
    """Each API call uploads the image again under a new file: the inversion is still re-used."""
    import shutil

    cache = InversionCache()
    first = engine.invert("wagi", EXAMPLE, cache)
    copy = tmp_path / "again.png"
    shutil.copyfile(EXAMPLE, copy)
    assert engine.invert("wagi", copy, cache) is first
    assert engine.invert("hfgi", copy, cache) is not first  # another model: its own inversion


@needs_gradio
@pytest.mark.slow
def test_app_script_serves_from_any_folder(tmp_path):
    """``python scripts/app.py --port P`` started outside the repository: the API answers on 127.0.0.1."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "app.py"), "--port", str(port), "--threads", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 90
        while True:
            try:
                client = gradio_client.Client(url, verbose=False)
                break
            except Exception:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the page did not come up in 90 s"
                time.sleep(0.5)
        recon = client.predict(gradio_client.handle_file(EXAMPLE), "wagi", api_name="/invert")[1]
        assert float(psnr(load_image(EXAMPLE, 128).unsqueeze(0), _read(recon).unsqueeze(0))[0]) > MIN_RECON_PSNR
    finally:
        proc.terminate()
        proc.wait(timeout=30)
