import numpy as np
import pytest
import torch

from wagi import wavelets as wv


def test_hand_computed_2x2_block():
    a, b, c, d = 1.0, 2.0, 5.0, 11.0
    x = torch.tensor([[a, b], [c, d]]).view(1, 1, 2, 2)
    y = wv.dwt(x).flatten().tolist()
    assert y == pytest.approx([(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2])


def test_band_major_layout_for_rgb():
    x = torch.randn(2, 3, 8, 8)
    y = wv.dwt(x)
    assert y.shape == (2, 12, 4, 4)
    # channel k of band LH is channel 3 + k of the 12-channel tensor
    expected_lh = (x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2] - x[:, :, 1::2, 0::2] - x[:, :, 1::2, 1::2]) / 2
    torch.testing.assert_close(y[:, 3:6], expected_lh)


def test_row_and_column_patterns_land_in_lh_and_hl():
    rows = torch.tensor([1.0, -1.0]).repeat(4).view(8, 1).expand(8, 8).reshape(1, 1, 8, 8)
    bands = wv.split_bands(wv.dwt(rows))
    assert bands["LH"].abs().min() == 2 and bands["HL"].abs().max() == 0 and bands["HH"].abs().max() == 0
    cols = rows.transpose(-1, -2)
    bands = wv.split_bands(wv.dwt(cols))
    assert bands["HL"].abs().min() == 2 and bands["LH"].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perfect_reconstruction_and_parseval(dtype):
    x = torch.randn(3, 5, 16, 12, dtype=dtype)
    y = wv.dwt(x)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert (wv.idwt(y) - x).abs().max() < tol
    assert abs(float(y.pow(2).sum() / x.pow(2).sum()) - 1) < tol


def test_multilevel_roundtrip_and_shapes():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ll, highs = wv.dwt_multilevel(x, 3)
    assert ll.shape == (2, 3, 4, 4)
    assert [h.shape[-1] for h in highs] == [16, 8, 4] and all(h.shape[1] == 9 for h in highs)
    assert (wv.idwt_multilevel(ll, highs) - x).abs().max() < 1e-12
    energy = ll.pow(2).sum() + sum(h.pow(2).sum() for h in highs)
    assert abs(float(energy / x.pow(2).sum()) - 1) < 1e-12


def test_equals_pywt():
    import pywt  # a declared test dependency (requirements-test.txt): a broken install must fail
    x = np.random.RandomState(0).randn(2, 3, 16, 16)
    y = wv.split_bands(wv.dwt(torch.from_numpy(x)))
    for n in range(2):
        for ch in range(3):
            cA, (cH, cV, cD) = pywt.dwt2(x[n, ch], "haar")
            np.testing.assert_allclose(y["LL"][n, ch].numpy(), cA, atol=1e-12)
            np.testing.assert_allclose(y["LH"][n, ch].numpy(), cH, atol=1e-12)
            np.testing.assert_allclose(y["HL"][n, ch].numpy(), cV, atol=1e-12)
            np.testing.assert_allclose(y["HH"][n, ch].numpy(), cD, atol=1e-12)
    # multi-level: pywt.wavedec2 lists coarsest first
    coeffs = pywt.wavedec2(x[0, 0], "haar", level=2)
    ll, highs = wv.dwt_multilevel(torch.from_numpy(x[:1, :1]), 2)
    np.testing.assert_allclose(ll[0, 0].numpy(), coeffs[0], atol=1e-12)
    for hi, (cH, cV, cD) in zip(reversed(highs), coeffs[1:]):
        np.testing.assert_allclose(hi[0].numpy(), np.stack([cH, cV, cD]), atol=1e-12)


def test_odd_size_is_a_clear_error():
    with pytest.raises(ValueError, match="even height and width"):
        wv.dwt(torch.randn(1, 3, 7, 8))
    with pytest.raises(ValueError, match="divisible by 8"):
        wv.dwt_multilevel(torch.randn(1, 3, 12, 12), 3)


def test_subband_mse_identity():
    x, y = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.randn(4, 3, 16, 16, dtype=torch.float64)
    m = wv.subband_mse(x, y)
    pixel = (x - y).pow(2).mean()
    assert abs(float(sum(m.values()) - 4 * pixel)) < 1e-10
    per_image = wv.subband_mse(x, y, reduce_batch=False)
    assert per_image["HH1"].shape == (4,)


def test_difference_only_in_hh_shows_only_in_hh():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    bands = wv.split_bands(wv.dwt(x))
    bands["HH"] = bands["HH"] + 0.3
    y = wv.idwt(wv.merge_bands(bands))
    m = wv.subband_mse(x, y)
    assert m["HH1"] == pytest.approx(0.09) and m["LL"] < 1e-20 and m["LH1"] < 1e-20 and m["HL1"] < 1e-20


def test_gradients_and_double_backward():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(wv.dwt, (x,))
    assert torch.autograd.gradgradcheck(lambda t: wv.dwt(t).pow(2), (x,))
    y = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(wv.idwt, (y,))
