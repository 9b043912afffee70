"""How long does MNIST take to load with its writers, cold and warm?

Cold: a new process, no parsed copy of MNIST in the cache folder (torchvision parses
the raw files, then the kit keeps a tensor copy). Warm: a new process with that copy.
Both read QMNIST's two label files and check them against MNIST's labels. Each figure
is the ``load_mnist()`` call alone (importing torch is not counted), best of
``--repeats`` fresh processes; also the writer partition and its heterogeneity numbers.

    FEDLAB_DATA_DIR=/path/to/data python bench/load_writers.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
from fedlab_widgets import load_mnist, partition
t1 = time.perf_counter()
train, test = load_mnist()
t2 = time.perf_counter()
assert train.has_writers and len(train.writers.unique()) == 539
p = partition(train, "writer")
t3 = time.perf_counter()
p.heterogeneity()
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "partition": t3 - t2, "heterogeneity": t4 - t3}))
"""


def _run(cache: str) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:     # an empty cache folder: cold
            # the data folder itself may hold a parsed copy beside the raw files; a
            # read-only shared folder does not, and neither does a fresh clone's data/
            cold.append(_run(cache))
            warm.append(_run(cache))                      # the copy the cold run wrote
    best = lambda runs, k: min(r[k] for r in runs)       # noqa: E731
    print(f"load_mnist() with writers: cold {best(cold, 'load'):.2f} s, warm {best(warm, 'load'):.2f} s "
          f"(best of {args.repeats} fresh processes; importing the kit and torch: "
          f"{best(warm, 'import'):.2f} s, not counted)")
    print(f"partition(train, 'writer'): {best(warm, 'partition') * 1000:.0f} ms; its heterogeneity "
          f"numbers with feature skew: {best(warm, 'heterogeneity') * 1000:.0f} ms")


if __name__ == "__main__":
    main()
