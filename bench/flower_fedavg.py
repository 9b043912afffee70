"""The same FedAvg job run with Flower's simulation runtime (Ray backend).

Written as Flower's own PyTorch quickstart writes it (the Message API of
Flower >= 1.20: a ``ClientApp`` with a ``@app.train()`` function, a ``ServerApp``
whose ``@app.main()`` runs ``flwr.serverapp.strategy.FedAvg.start``), with the
client and test code of ``tutorial_loop.py`` so that the only difference from
that row is Flower's orchestration: Ray actors, message passing and
serialisation of the model to and from every client.

* ``fraction_train=C``: Flower samples ``int(K * C)`` of the K virtual clients
  ("SuperNodes") each round;
* ``fraction_evaluate=0``: no client-side evaluation; instead ``evaluate_fn``
  evaluates the global model on the full test set on the server after every round;
* ``client_resources={"num_cpus": n}``: Ray runs ``cores / n`` client actors in
  parallel (each with ``n`` torch threads).

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/flower_fedavg.py --model 2nn --rounds 5 --cpus-per-client 1

(``pip install -e ".[bench]"`` installs ``flwr[simulation]``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch
from torch.utils.data import DataLoader

from fedlab_widgets import partition
from tutorial_loop import (TEST_BATCH_SIZE, add_job_arguments, client_update, load_datasets,
                           make_client_loaders, test, tutorial_model)

__all__ = ["run_flower", "client_app", "FLOWER_AVAILABLE", "FLOWER_VERSION"]

try:  # Flower is an optional dependency (the "bench" extra)
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    FLOWER_AVAILABLE, FLOWER_VERSION, FLOWER_ERROR = True, flwr.__version__, ""
except ImportError as e:  # pragma: no cover - reported as "n/a" by round_speed.py
    FLOWER_AVAILABLE, FLOWER_VERSION, FLOWER_ERROR = False, None, f"{type(e).__name__}: {e}"


# -- client side (runs inside the Ray actors) ------------------------------------------
# Each actor is a separate process; it loads MNIST and builds the partition once
# and keeps the client DataLoaders, as the quickstart caches its FederatedDataset.
_CLIENT_CACHE: dict[tuple, list[DataLoader]] = {}


def _client_loaders(scheme: str, num_clients: int, batch_size: int, seed: int) -> list[DataLoader]:
    key = (scheme, num_clients, batch_size, seed)
    if key not in _CLIENT_CACHE:
        train_set, _ = load_datasets()
        parts = partition(train_set.targets, scheme, num_clients, seed=seed)
        _CLIENT_CACHE[key] = make_client_loaders(train_set, parts, batch_size)
    return _CLIENT_CACHE[key]


if FLOWER_AVAILABLE:
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        """Local training on this SuperNode's partition; reply with weights and sample count."""
        cfg = msg.content["config"]
        model = tutorial_model(cfg["model"])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loaders = _client_loaders(cfg["scheme"], int(context.node_config["num-partitions"]),
                                  int(cfg["batch-size"]), int(cfg["partition-seed"]))
        loader = loaders[int(context.node_config["partition-id"])]
        state, n = client_update(model, loader, int(cfg["local-epochs"]), float(cfg["lr"]))
        content = RecordDict({"arrays": ArrayRecord(state),
                              "metrics": MetricRecord({"num-examples": n})})
        return Message(content=content, reply_to=msg)
else:
    client_app = None


# -- server side (runs in a thread of this process) ------------------------------------
def run_flower(model: str = "2nn", scheme: str = "iid", num_clients: int = 100,
               client_fraction: float = 0.1, local_epochs: int = 1, batch_size: int = 10,
               lr: float = 0.1, rounds: int = 5, *, cpus_per_client: float = 1,
               num_cpus: int | None = None, seed: int = 0, quiet: bool = True) -> list[dict]:
    """Run ``rounds`` FedAvg rounds in Flower's simulation runtime.

    Returns
    -------
    list of dict
        One per round: ``accuracy``, ``seconds`` (wall time of the round including
        the server-side test evaluation), ``train_seconds`` (excluding it) and
        ``samples`` (training samples processed).
    """
    if not FLOWER_AVAILABLE:
        raise RuntimeError(f"Flower is not installed ({FLOWER_ERROR}); pip install 'flwr[simulation]'")
    if quiet:
        # Flower logs a few lines per round at INFO; the benchmark prints its own table
        logging.getLogger("flwr").setLevel(logging.WARNING)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    _, test_set = load_datasets()
    test_loader = DataLoader(test_set, batch_size=TEST_BATCH_SIZE, shuffle=False)
    records: list[dict] = []
    marks = {"t": 0.0}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        # Called before round 1 and after every round: the gaps between calls are
        # the round times.
        t_start = time.perf_counter()
        net = tutorial_model(model)
        net.load_state_dict(arrays.to_torch_state_dict())
        acc, loss = test(net, test_loader)
        t_end = time.perf_counter()
        if server_round > 0:
            records.append({"round": server_round, "accuracy": acc, "loss": loss,
                            "train_seconds": t_start - marks["t"], "seconds": t_end - marks["t"]})
        marks["t"] = t_end
        return MetricRecord({"accuracy": acc, "loss": loss})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=client_fraction, fraction_evaluate=0.0,
                          min_available_nodes=num_clients)
        config = ConfigRecord({"model": model, "scheme": scheme, "partition-seed": seed,
                               "batch-size": batch_size, "local-epochs": local_epochs, "lr": lr})
        strategy.start(grid=grid, initial_arrays=ArrayRecord(tutorial_model(model, seed=seed).state_dict()),
                       num_rounds=rounds, train_config=config, evaluate_fn=evaluate_fn)

    backend_config = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                      "init_args": {"num_cpus": num_cpus or os.cpu_count(),
                                    "logging_level": logging.ERROR, "log_to_driver": not quiet}}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_clients,
                   backend_config=backend_config)
    # Flower samples max(int(K * C), min_train_nodes=2) clients at random; the
    # partitions used here give every client the same number of samples.
    train_set, _ = load_datasets()
    parts = partition(train_set.targets, scheme, num_clients, seed=seed)
    mean_size = float(parts.sizes.double().mean())
    sampled = max(int(num_clients * client_fraction), 2)
    for r in records:
        r["samples"] = int(round(local_epochs * sampled * mean_size))
    return records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="FedAvg in Flower's simulation runtime")
    add_job_arguments(ap)
    ap.add_argument("--cpus-per-client", type=float, default=1)
    ap.add_argument("--json", action="store_true",
                    help="print the per-round records as one JSON line (for round_speed.py)")
    args = ap.parse_args(argv)
    print(f"Flower {FLOWER_VERSION}, torch {torch.__version__}")
    recs = run_flower(args.model, args.scheme, args.clients, args.C, args.E, args.B, args.lr,
                      args.rounds, cpus_per_client=args.cpus_per_client)
    if args.json:
        print(json.dumps({"flower": FLOWER_VERSION, "records": recs}))
        return
    for r in recs:
        print(f"round {r['round']}: accuracy {r['accuracy']:.4f}, {r['seconds']:.2f} s "
              f"({r['train_seconds']:.2f} s training)")


if __name__ == "__main__":
    main()
