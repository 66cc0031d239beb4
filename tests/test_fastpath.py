"""wagi.fastpath: a fixed-shape call replayed as one CUDA graph (the GPU cases skip without CUDA), and its eager
fallback, which is what the CPU runs."""
import pytest
import torch

from wagi.fastpath import CudaGraphCall, graphed_or_eager
from wagi.models.layers import NoiseInjection
from wagi.models.swagan import Generator

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")


def _generator(device):
    torch.manual_seed(0)
    g = Generator(32, 64, 2, channel_max=32).to(device).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def test_refuses_cpu_inputs_and_bad_warmup():
    with pytest.raises(ValueError, match="input 0 is on cpu, not a CUDA tensor"):
        CudaGraphCall(lambda x: x * 2, torch.ones(2))
    with pytest.raises(ValueError, match="at least one example input"):
        CudaGraphCall(lambda: torch.ones(2))
    if CUDA:
        with pytest.raises(ValueError, match="warmup must be >= 1"):
            CudaGraphCall(lambda x: x * 2, torch.ones(2, device="cuda"), warmup=0)


def test_eager_fallback_on_cpu_matches_the_plain_call():
    g = _generator("cpu")
    w = torch.randn(2, 64)

    def forward(w):
        return g([w], input_is_latent=True, randomize_noise=False)[0]

    run = graphed_or_eager(forward, w)  # CPU inputs: no graph, the call itself (no autograd)
    with torch.no_grad():
        ref = forward(w)
    out = run(w)
    assert torch.equal(out, ref) and not out.requires_grad
    low = graphed_or_eager(forward, w, precision="bf16")(w)  # the precision is applied on the fallback too
    assert low.dtype == torch.float32  # the generator's skip chain accumulates in fp32
    assert 0 < (low - ref).norm() / ref.norm() < 2e-2
    with pytest.raises(ValueError, match="precision must be one of"):
        graphed_or_eager(forward, w, precision="fp8")


@needs_cuda
def test_generator_graph_replays_the_eager_forward():
    g = _generator("cuda")
    torch.manual_seed(1)
    w1, w2 = torch.randn(2, 4, 64, device="cuda")

    def forward(w):
        return g([w], input_is_latent=True, randomize_noise=False)[0]

    run = CudaGraphCall(forward, w1)
    with torch.no_grad():
        ref1, ref2 = forward(w1), forward(w2)
    out = run(w2)
    torch.testing.assert_close(out, ref2, rtol=1e-5, atol=1e-5)
    out_buffer = out
    torch.testing.assert_close(run(w1), ref1, rtol=1e-5, atol=1e-5)
    assert out_buffer.data_ptr() == run.static_outputs.data_ptr()  # the graph's own buffer, overwritten
    kept = CudaGraphCall(forward, w1, clone=True)
    a = kept(w1)
    kept(w2)
    torch.testing.assert_close(a, ref1, rtol=1e-5, atol=1e-5)  # clone=True: earlier outputs survive
    with pytest.raises(ValueError, match=r"recorded \(4, 64\).*got \(2, 64\)"):
        run(w1[:2])


@needs_cuda
def test_generator_graph_in_bf16_and_fresh_noise_per_replay():
    g = _generator("cuda")
    for m in g.modules():  # noise weights start at 0: give the noise a visible effect
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.5)
    w = torch.randn(4, 64, device="cuda")

    def forward(w):
        return g([w], input_is_latent=True, randomize_noise=False)[0]

    with torch.no_grad():
        ref = forward(w)
    low = CudaGraphCall(forward, w, precision="bf16")(w).float()
    with torch.autocast("cuda", dtype=torch.bfloat16):  # an outer autocast does not leak into an fp32 recording
        exact = CudaGraphCall(forward, w, precision="fp32")(w)
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-5)
    err = float((low - ref).norm() / ref.norm())
    assert 0 < err < 2e-2
    noisy = CudaGraphCall(lambda w: g([w], input_is_latent=True, randomize_noise=True)[0], w, clone=True)
    a, b = noisy(w), noisy(w)
    assert not torch.equal(a, b)  # new noise on every replay
    assert float((a - ref).norm() / ref.norm()) < 0.5  # the same images up to the noise
