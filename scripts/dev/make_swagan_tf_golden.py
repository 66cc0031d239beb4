"""Golden files for the SWAGAN TensorFlow converter, made with the official code (a development tool).

Not a runtime or test requirement of WaGI: it needs TensorFlow, which WaGI never imports. Run it in a
separate environment with ``tensorflow-cpu`` (any 2.x: the official TF1 code runs through
``tf.compat.v1`` in graph mode) and numpy, and a checkout of the official SWAGAN code
(https://github.com/rinongal/swagan)::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python scripts/dev/make_swagan_tf_golden.py --swagan-src /path/to/swagan \
        --output tests/data/swagan_tf

For each resolution it builds the official ``G_main`` / ``G_synthesis_wavelets`` generator
(``architecture='wavelets'``) and a ``D_stylegan2_wavelets`` discriminator at a small width, fills every
variable with random non-trivial values (biases, modulation biases, noise strengths, noise maps and
``dlatent_avg`` all non-zero; the training network G gets other values than its moving average Gs, so
a converter that reads G instead of Gs fails), and writes:

* ``swagan_r{R}.pkl``: the tuple ``(G, D, Gs)`` pickled the official way (``pickle.dump`` of dnnlib
  ``Network`` objects, as the official training loop saves snapshots). The seven networks carry equal
  copies of the module source; they are made one string object first, so the file stores it once;
* ``swagan_r{R}_golden.npz``: inputs and the official outputs, all float32 (images in [-1, 1] units,
  NCHW): ``z`` (N, Z) and its mapped ``w`` (N, W); ``images_psi{P}`` = ``Gs.run(z, None,
  truncation_psi=P, randomize_noise=False)`` for P in :data:`PSIS` (``psi050`` is the official default);
  ``wplus`` (N, 2 log2 R - 2, W) random and ``images_wplus`` = ``Gs.components.synthesis.run(wplus,
  randomize_noise=False)``.

and, for the first resolution, ``swagan_r{R}_trap.pkl``: the same networks pickled with every
``build_module_src`` replaced by source that raises when executed (the official unpickler would run
it), for the test that proves the converter never executes stored code.

The official ops run their reference TensorFlow implementations (``impl='ref'``): the CUDA entry
points are pointed at them, so no plugin is compiled. Seeds are fixed; TF's float32 kernels may still
differ in the last bits between versions, far below the 1e-3 tolerance of the comparison.
"""
import argparse
import importlib.util
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np

RESOLUTIONS = (8, 16, 32)  # committed: 0, 1 and 2 up-sampling blocks; larger ones on request
PSIS = (1.0, 0.5)  # no truncation, and the official default
BATCH = 2
BATCH_LARGEST = 1  # from 64 px (not committed): random images do not compress
LATENT = 16  # Z and W width of the small golden networks (the FFHQ model: 512)
MAPPING_LAYERS = 3  # the FFHQ model: 8
FMAP_BASE = 32  # with FMAP_MAX 8: 8 channels at features 4 and 8, 4 at 16: the widths vary per level
FMAP_MAX = 8
D_FMAP_MAX = 2  # the discriminator is pickled only because official files hold it
OFFICIAL_PROTOCOL = 4  # pickle.HIGHEST_PROTOCOL under Python 3.6, which the official code requires
FFHQ_WIDTH = dict(latent=512, mapping_layers=8, fmap_base=16 << 10, fmap_max=512)  # config-f, as the FFHQ model
TRAP_SOURCE = "raise RuntimeError('stored build_module_src was executed')\n"


def _import_package(name: str, folder: Path) -> None:
    """Import the package in ``folder`` as ``name``; its submodules then import through it (``dnnlib.tflib``,
    ``training.networks_stylegan2`` named by the networks' ``func_name``) without an edit of ``sys.path``."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def import_official(src: Path):
    """Import the official dnnlib and networks with TF1 names served by ``tf.compat.v1``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf2

    tf1 = tf2.compat.v1
    tf1.disable_v2_behavior()  # graph mode, TF1 shapes (Dimension.value), variable scopes
    contrib = types.ModuleType("tensorflow.contrib")  # tfutil imports it; nothing used here needs it
    tf1.contrib = contrib
    sys.modules["tensorflow"] = tf1
    sys.modules["tensorflow.contrib"] = contrib
    for package in ("dnnlib", "training"):  # the official packages, imported from the checkout by location
        _import_package(package, src / package)
    import dnnlib.tflib as tflib
    from dnnlib.tflib.ops import fused_bias_act, upfirdn_2d

    fused_bias_act._fused_bias_act_cuda = fused_bias_act._fused_bias_act_ref
    upfirdn_2d._upfirdn_2d_cuda = upfirdn_2d._upfirdn_2d_ref
    tflib.init_tf({"allow_soft_placement": True, "rnd.np_random_seed": 0, "rnd.tf_random_seed": 0})
    return tflib


def random_values(net, rng: np.random.Generator) -> dict:
    """Non-trivial values for every variable of ``net`` (and its components), by variable kind."""
    values = {}
    for name, var in net.vars.items():
        shape = var.shape.as_list()
        leaf = name.split("/")[-1]
        if leaf == "lod":
            v = np.zeros(shape)
        elif leaf == "dlatent_avg":
            v = rng.normal(0, 0.5, shape)
        elif leaf == "mod_bias":
            v = rng.normal(0, 0.3, shape)  # the style is 1 + mod_bias
        elif leaf == "bias" and "G_mapping" in name:
            v = rng.normal(0, 20.0, shape)  # times the mapping lrmul 0.01 at run time
        elif leaf == "bias":
            v = rng.normal(0, 0.3, shape)
        elif leaf == "noise_strength":
            v = rng.normal(0, 0.5, shape)
        else:  # weight, mod_weight, const, noise maps: unit normal, as the official initialisers
            v = rng.normal(0, 1.0, shape)
        values[var] = v.astype(np.float32)
    return values


def build(tflib, resolution: int, width: dict):
    common = dict(num_channels=3, resolution=resolution, label_size=0, fmap_base=width["fmap_base"],
                  architecture="wavelets")
    G = tflib.Network("G", func_name="training.networks_stylegan2.G_main", synthesis_func="G_synthesis_wavelets",
                      fmap_max=width["fmap_max"], latent_size=width["latent"], dlatent_size=width["latent"],
                      mapping_fmaps=width["latent"], mapping_layers=width["mapping_layers"], **common)
    D = tflib.Network("D", func_name="training.networks_stylegan2.D_stylegan2_wavelets", fmap_max=D_FMAP_MAX,
                      **common)
    Gs = G.clone("Gs")
    nets = all_networks(G, D, Gs)
    source = Gs._build_module_src
    assert all(net._build_module_src == source for net in nets)
    for net in nets:  # equal strings, now one object: the pickle memo stores the source once per file
        net._build_module_src = source
    return G, D, Gs


def all_networks(*nets):
    out = []
    for net in nets:
        out += [net, *all_networks(*net.components.values())]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swagan-src", type=Path, required=True, help="checkout of rinongal/swagan")
    ap.add_argument("--output", type=Path, default=Path("tests/data/swagan_tf"))
    ap.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS))
    ap.add_argument("--ffhq-width", action="store_true",
                    help="the FFHQ model's widths (Z/W 512, 8 mapping layers, fmap_base 16384, fmap_max 512) "
                         "instead of the small committed ones; files of hundreds of MB at 1024 px")
    args = ap.parse_args(argv)
    width = FFHQ_WIDTH if args.ffhq_width else dict(latent=LATENT, mapping_layers=MAPPING_LAYERS,
                                                     fmap_base=FMAP_BASE, fmap_max=FMAP_MAX)

    tflib = import_official(args.swagan_src)
    args.output.mkdir(parents=True, exist_ok=True)
    for i, res in enumerate(args.resolutions):
        rng = np.random.default_rng(1000 + res)
        G, D, Gs = build(tflib, res, width)
        tflib.set_vars(random_values(Gs, rng))
        tflib.set_vars(random_values(G, rng))

        batch = BATCH_LARGEST if res >= 64 else BATCH
        z = rng.normal(size=(batch, width["latent"])).astype(np.float32)
        golden = {"z": z, "w": Gs.components.mapping.run(z, None)[:, 0]}
        for psi in PSIS:
            golden[f"images_psi{int(round(psi * 100)):03d}"] = Gs.run(z, None, truncation_psi=psi,
                                                                      randomize_noise=False)
        n_rows = Gs.components.synthesis.input_shape[1]
        golden["wplus"] = rng.normal(size=(batch, n_rows, width["latent"])).astype(np.float32)
        golden["images_wplus"] = Gs.components.synthesis.run(golden["wplus"], randomize_noise=False)
        assert all(np.isfinite(v).all() for v in golden.values())
        np.savez_compressed(args.output / f"swagan_r{res}_golden.npz", **golden)
        with open(args.output / f"swagan_r{res}.pkl", "wb") as f:
            pickle.dump((G, D, Gs), f, protocol=OFFICIAL_PROTOCOL)
        if i == 0:
            for net in all_networks(G, D, Gs):
                net._build_module_src = TRAP_SOURCE
            with open(args.output / f"swagan_r{res}_trap.pkl", "wb") as f:
                pickle.dump((G, D, Gs), f, protocol=OFFICIAL_PROTOCOL)
        img = golden["images_psi100"]
        print(f"{res}: images {img.shape} range [{img.min():.3f}, {img.max():.3f}] std {img.std():.3f}")


if __name__ == "__main__":
    main()
