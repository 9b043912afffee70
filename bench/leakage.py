"""Gradient inversion on MNIST: iDLG against DLG, and what makes the attack harder.

Part 1 reproduces Zhao et al. 2020 (iDLG), Table 1, MNIST row: the share of
labels recovered (iDLG 100%, DLG 89.9% in the paper) over ``--images`` test images
(the first N), each attacked once from a random start on the sigmoid LeNet with
the papers' uniform(-0.5, 0.5) initialisation, pixels in [0, 1], float64, 300
L-BFGS steps (and iDLG again, best of 4 random starts). It also prints the reconstruction MSE (pixel space) and the share of
images recovered to MSE < 0.01 (a digit a reader recognises at once).

Part 2 attacks ``--defence-images`` images under each change to what is shared:
a FedAvg update after several local steps, a batch of several images, clipping,
Gaussian noise, top-k sparsification.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/leakage.py                    # ~45 minutes (one core)
    python bench/leakage.py --images 10 --defence-images 4   # a check run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedlab_widgets import get_model, load_mnist
from fedlab_widgets import leakage as L

RECOVERED = 0.01   # pixel MSE below which a reconstruction counts as recovered


def attack(model, grads, x, y, *, seed, **kw):
    images, labels = L.invert_gradients(model, grads, num_images=len(y), seed=seed, **kw)
    mse = L.reconstruction_mse(images, x)
    label_ok = sorted(labels.tolist()) == sorted(y.tolist())
    return mse, label_ok


def row(name, mses, labels_ok, seconds):
    mses = [float(m) for m in mses]
    print(f"{name:<40} {100 * sum(labels_ok) / len(labels_ok):6.1f}% "
          f"{statistics.median(mses):>11.2e} {100 * sum(m < RECOVERED for m in mses) / len(mses):8.1f}% "
          f"{seconds / len(labels_ok):7.1f}", flush=True)


def header(title):
    print(f"\n{title}\n{'setting':<40} {'labels':>7} {'median MSE':>11} {'recovered':>9} {'s/image':>7}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--defence-images", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4, help="random starts per attack in part 2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, test = load_mnist()
    model = get_model("lenet", seed=args.seed).double()

    if 1 in args.parts:
        part1(args, model, test)
    if 2 in args.parts:
        part2(args, model, test)


def part1(args, model, test):
    header(f"Part 1: {args.images} MNIST test images, one gradient each (FedSGD, batch 1)")
    for method, restarts in (("idlg", 1), ("dlg", 1), ("idlg", 4)):
        t0, mses, oks = time.perf_counter(), [], []
        for i in range(args.images):
            x, y = L.pixels(test, i)
            grads = L.client_gradient(model, x, y)
            mse, ok = attack(model, grads, x, y, seed=args.seed + 100 * i, method=method,
                             iterations=args.iterations, restarts=restarts)
            mses.append(mse[0])
            oks.append(ok)
        row(method.upper() + ("" if restarts == 1 else f", best of {restarts} starts"),
            mses, oks, time.perf_counter() - t0)
    print("paper (Zhao et al. 2020, Table 1, MNIST): labels iDLG 100%, DLG 89.9%")


def part2(args, model, test):
    n = args.defence_images
    header(f"Part 2: what makes it harder ({n} attacks each, best of {args.restarts} starts; "
           "iDLG for one image, DLG for batches)")

    def measure(name, make, *, num=1, **kw):
        t0, mses, oks = time.perf_counter(), [], []
        for i in range(n):
            x, y = L.pixels(test, list(range(num * i, num * i + num)))
            grads = make(x, y)
            mse, ok = attack(model, grads, x, y, seed=args.seed + 100 * i,
                             iterations=args.iterations, restarts=args.restarts, **kw)
            mses.extend(mse.tolist())
            oks.append(ok)
        row(name, mses, oks, time.perf_counter() - t0)

    grad = lambda x, y: L.client_gradient(model, x, y)   # noqa: E731
    measure("one gradient (reference)", grad)
    for steps in (2, 5, 20):
        measure(f"FedAvg update, {steps} local steps, lr 0.1",
                lambda x, y, s=steps: L.fedavg_update(model, x, y, local_steps=s, lr=0.1))
    for b in (2, 4, 8):
        measure(f"batch of {b} (DLG)", grad, num=b)
    norm = statistics.median(
        float(torch.sqrt(sum((g * g).sum() for g in grad(*L.pixels(test, i))))) for i in range(n))
    for dist in ("l2", "cosine"):
        measure(f"clipped to 0.1 x its norm, {dist}",
                lambda x, y: L.clip(grad(x, y), 0.1 * norm), distance=dist)
    for std in (1e-4, 1e-3, 1e-2, 1e-1):
        measure(f"Gaussian noise std {std:g}",
                lambda x, y, s=std: L.add_noise(grad(x, y), s, seed=args.seed))
    for frac in (0.5, 0.1, 0.01):
        measure(f"top-k, keep {frac:.0%}", lambda x, y, f=frac: L.top_k(grad(x, y), f))
    print(f"median gradient norm: {norm:.3g}; recovered = pixel MSE < {RECOVERED}")


if __name__ == "__main__":
    main()
