"""Train the ``mrcnn`` app's network and write its weights into the package.

Simulates fields with deterministic seeds (:func:`caesar_rest.apps.mrcnn_sim.truth_field`, the
fields of ``caesar_rest.classify.simfields`` with per-pixel truth), makes the network's input
from each (the significance map of the classifier's noise maps, resampled to the network's beam
as the app does), and trains the U-Net of :mod:`caesar_rest.apps.mrcnn_net` with PyTorch (CPU,
one thread, deterministic) on random 128x128 crops, flipped and rotated, with a class-weighted
cross-entropy. Writes ``src/caesar_rest/apps/mrcnn_weights.npz`` with a reference input and
its PyTorch logits (the tests check the NumPy network against them), after checking that the
NumPy forward pass reproduces PyTorch's.

Needs the ``train`` extra (``pip install -e .[train]``, PyTorch). Training fields: seeds 1-N
(512x512); monitoring: seeds 901-902; the benchmark (``benchmarks/mrcnn.py``) holds out seeds
from 1001.

Usage::

    python scripts/train_mrcnn.py [--fields 48] [--steps 3000] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as fn

from caesar_rest.apps import mrcnn_net as mn
from caesar_rest.apps.mrcnn_sim import image_of, truth_field
from caesar_rest.classify.features import beam_fwhm_pix, find_islands

CROP = 128
FIELD = 512


class UNet(nn.Module):
    """The network of :mod:`caesar_rest.apps.mrcnn_net` (same layers, same names)."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, k, dil in mn.LAYERS:
            self.add_module(name, nn.Conv2d(cin, cout, k, padding=dil * (k // 2), dilation=dil))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch (N, 2, H, W)."""
        c = {name: getattr(self, name) for name, *_ in mn.LAYERS}
        e1 = fn.relu(c["e1b"](fn.relu(c["e1a"](x))))
        e2 = fn.relu(c["e2b"](fn.relu(c["e2a"](fn.max_pool2d(e1, 2)))))
        bot = fn.relu(c["b2"](fn.relu(c["b1"](fn.max_pool2d(e2, 2)))))
        d2 = fn.relu(c["d2"](fn.interpolate(c["p2"](bot), scale_factor=2.0) + e2))
        d1 = fn.relu(c["d1"](fn.interpolate(c["p1"](d2), scale_factor=2.0) + e1))
        out: torch.Tensor = c["head"](d1)
        return out


def field_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Network input (2, H, W) and class map (H, W) of one simulated field, on the network grid."""
    tf = truth_field(seed, FIELD)
    image = image_of(tf.field)
    sig = find_islands(image).sig
    z = mn.zoom_factor(beam_fwhm_pix(image))
    m = mn._net_extent(FIELD, z)
    x = mn.input_channels(mn.sample(sig, z, (0, m), (0, m), order=1))
    y = mn.sample(tf.classes.astype(np.float32), z, (0, m), (0, m), order=0)
    return x, np.rint(y).astype(np.int64)


def batch(
    rng: np.random.Generator, data: list[tuple[np.ndarray, np.ndarray]], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, flipped and rotated by multiples of 90 degrees."""
    xs, ys = [], []
    for _ in range(size):
        x, y = data[int(rng.integers(len(data)))]
        r = int(rng.integers(0, y.shape[0] - CROP + 1))
        c = int(rng.integers(0, y.shape[1] - CROP + 1))
        xc, yc = x[:, r : r + CROP, c : c + CROP], y[r : r + CROP, c : c + CROP]
        k = int(rng.integers(4))
        xc, yc = np.rot90(xc, k, axes=(1, 2)), np.rot90(yc, k)
        if rng.integers(2):
            xc, yc = xc[:, :, ::-1], yc[:, ::-1]
        xs.append(np.ascontiguousarray(xc))
        ys.append(np.ascontiguousarray(yc))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def class_weights(data: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """Cross-entropy weights: inverse square root of each class's pixel frequency."""
    counts = sum(np.bincount(y.ravel(), minlength=len(mn.NET_CLASSES)) for _, y in data)
    freq = np.maximum(np.asarray(counts, dtype=np.float64) / np.sum(counts), 1e-6)
    w = freq**-0.5
    w /= float((w * freq).sum())
    print("pixel fractions:", dict(zip(mn.NET_CLASSES, np.round(freq, 4), strict=True)))
    return torch.tensor(w, dtype=torch.float32)


def evaluate(model: UNet, data: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray]:
    """Pixel accuracy and per-class recall on whole fields."""
    hits = np.zeros(len(mn.NET_CLASSES))
    tot = np.zeros(len(mn.NET_CLASSES))
    with torch.no_grad():
        for x, y in data:
            h, w = (s // 4 * 4 for s in y.shape)
            pred = model(torch.from_numpy(x[None, :, :h, :w])).argmax(1)[0].numpy()
            t = y[:h, :w]
            tot += np.bincount(t.ravel(), minlength=len(tot))
            hits += np.bincount(t[pred == t].ravel(), minlength=len(tot))
    return float(hits.sum() / tot.sum()), hits / np.maximum(tot, 1)


def export(model: UNet, out: Path, meta: str) -> None:
    """Write the weights, a reference input and its logits; check NumPy against PyTorch."""
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(7)
    ref = mn.input_channels((rng.standard_normal((32, 32)) * 3 + 2).astype(np.float32))
    ref[:, 10:16, 12:20] += 1.5
    with torch.no_grad():
        ref_out = model(torch.from_numpy(ref[None]))[0].numpy()
    np.savez_compressed(out, **state, ref_input=ref, ref_logits=ref_out, meta=np.array(meta))
    net = mn.load(out)
    diff = float(np.abs(mn.forward(net, ref) - ref_out).max())
    print(f"NumPy network vs PyTorch: max logit difference {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the NumPy network does not reproduce PyTorch's")


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=48, help="training fields (seeds 1..N)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", type=Path, default=mn.WEIGHTS)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    data = [field_arrays(s) for s in range(1, a.fields + 1)]
    val = [field_arrays(s) for s in (901, 902)]
    print(f"{len(data)} fields simulated in {time.perf_counter() - t0:.0f} s", flush=True)
    weights = class_weights(data)
    model = UNet()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps)
    rng = np.random.default_rng(0)
    t1 = time.perf_counter()
    for step in range(1, a.steps + 1):
        x, y = batch(rng, data, a.batch)
        loss = fn.cross_entropy(model(x), y, weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == a.steps:
            acc, rec = evaluate(model, val)
            print(
                f"step {step} loss {loss.item():.3f} val accuracy {acc:.3f} recall "
                + " ".join(f"{c[:6]}={r:.2f}" for c, r in zip(mn.NET_CLASSES, rec, strict=True))
                + f" ({time.perf_counter() - t1:.0f} s)",
                flush=True,
            )
    meta = f"train_mrcnn.py: fields 1-{a.fields} ({FIELD}^2), {a.steps} steps x {a.batch}"
    export(model, a.out, meta)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
