"""The Flower App's code: the ClientApp's training step and the ServerApp's strategy and main."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from ..threads import torch_threads
from .export import from_flower
from .version import FLOWER_VERSION

__all__ = ["client_train", "server_main", "strategy_for", "simulation_of"]

_SIMS: dict = {}   # one simulation per process and run config

_STARTED = time.time()


def simulation_of(cfg) -> "Simulation":
    """The experiment rebuilt from the run config, once per process."""
    key = json.dumps({k: cfg[k] for k in sorted(cfg) if k not in ("results-path",)})
    if key not in _SIMS:
        from .. import algorithms
        from ..datasets import load_fashion_mnist, load_mnist
        from ..partition import partition
        from ..simulation import Simulation
        train, test = (load_mnist if cfg["dataset"] == "MNIST" else load_fashion_mnist)()
        parts = partition(train, cfg["scheme"], int(cfg["num-clients"]),
                          seed=int(cfg["partition-seed"]), **json.loads(cfg["partition-params"]))
        if parts.fingerprint() != cfg["partition-fingerprint"]:
            raise RuntimeError("this process rebuilt a different partition than the exported one "
                               "(different data files or kit version?)")
        skew = json.loads(cfg.get("feature-skew", "{}"))
        if skew:
            from ..features import skew_features
            train = skew_features(train, parts, **skew)
        agg = cfg["aggregator"]
        alg = algorithms.get(cfg["algorithm"], **json.loads(cfg["algorithm-params"]),
                             **json.loads(cfg["aggregator-params"]),
                             **({"aggregator": agg} if agg not in ("mean", "fednova") else {}),
                             **({"differential_privacy": True, **json.loads(cfg["dp-params"])}
                                if cfg["differential-privacy"] and cfg["algorithm"] != "dp-fedavg"
                                else {}))
        sim = Simulation(cfg["model"], train, test, parts, config=from_flower(cfg), algorithm=alg)
        init = sim.layout.flatten(sim.global_model.parameters()).double().abs().sum()
        if not math.isclose(float(init), float(cfg["initial-checksum"]), rel_tol=1e-9):
            raise RuntimeError("this process rebuilt a different initial model than the exported one")
        _SIMS[key] = sim
    return _SIMS[key]


def client_train(msg, context):
    """A ClientApp's train step: the kit's local training on this SuperNode's partition."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from ..engines import LocalRule

    t0 = time.time()
    sim = simulation_of(context.run_config)
    t1 = time.time()
    k = int(context.node_config["partition-id"])
    config = msg.content["config"]
    r = int(config["server-round"])
    mu = float(config.get("proximal-mu", sim.algorithm.mu))  # FedProx sends its mu
    model = sim.global_model
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch_threads(1), torch.no_grad():
        x = sim.layout.flatten(model.parameters())
        schedule = sim.make_schedule(r, [k])
        u = sim.engine.train_clients(x, schedule, lr=sim.lr, rule=LocalRule(mu=mu))
        torch._foreach_copy_(list(model.parameters()), sim.layout.views(x + u.delta[0]))
    metrics = MetricRecord({"num-examples": int(u.weight[0]), "steps": int(u.steps[0]),
                            "train-loss": float(u.loss[0]), "partition-id": k,
                            "train-seconds": time.time() - t1,     # the local training
                            "setup-seconds": t1 - t0,              # data, partition, model
                            "process-seconds": t0 - _process_start()})  # start, imports
    return Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                       "metrics": metrics}), reply_to=msg)


def _process_start() -> float:
    """When this process started (Linux: from /proc; else when the kit was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return _STARTED


def _recording(cls, log: list):
    """``cls`` (a Flower strategy) that also notes who took part in each round."""
    class Recording(cls):
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            ok = [m for m in replies if not m.has_error()]
            log.append({"round": server_round,
                        "clients": sorted(int(m.content["metrics"]["partition-id"]) for m in ok),
                        "client_loss": [float(m.content["metrics"]["train-loss"]) for m in ok],
                        "weight": [float(m.content["metrics"]["num-examples"]) for m in ok],
                        "client_seconds": [float(m.content["metrics"]["train-seconds"]) for m in ok],
                        "setup_seconds": [float(m.content["metrics"]["setup-seconds"]) for m in ok],
                        "process_seconds": [float(m.content["metrics"]["process-seconds"])
                                            for m in ok],
                        "failures": len(replies) - len(ok)})
            return super().aggregate_train(server_round, replies)
    Recording.__name__ = cls.__name__
    return Recording


def _kit_pipeline(base, sim):
    """``base`` (a Flower strategy: its sampling and messaging) with the kit's round pipeline
    as its aggregation: client steps, aggregator, server steps and server optimiser."""
    from flwr.app import ArrayRecord
    from ..engines.base import ClientUpdates
    from ..round import round_context, server_half

    class KitPipeline(base):
        def configure_train(self, server_round, arrays, config, grid):
            self._x = arrays
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            ok = [m for m in replies if not m.has_error()]
            if not ok:
                return None, None
            layout = sim.layout
            x = _flat(sim, self._x)
            rows = [_flat(sim, m.content["arrays"]) for m in ok]
            met = [m.content["metrics"] for m in ok]
            updates = ClientUpdates(
                clients=[int(q["partition-id"]) for q in met],
                delta=torch.stack(rows) - x,
                weight=torch.tensor([float(q["num-examples"]) for q in met], dtype=torch.float64),
                steps=torch.tensor([int(q["steps"]) for q in met]),
                loss=torch.tensor([float(q["train-loss"]) for q in met], dtype=torch.float64))
            # the server process's simulation keeps the server state (optimiser moments, ...);
            # the server half of the round is the simulation's own function
            ctx = round_context(sim, server_round, x)
            model = sim.global_model
            with torch.no_grad():
                x_new = server_half(sim.algorithm, updates, ctx)
                torch._foreach_copy_(list(model.parameters()), layout.views(x_new))
            return ArrayRecord(model.state_dict()), None
    return KitPipeline


def _flat(sim, arrays) -> torch.Tensor:
    sd = arrays.to_torch_state_dict()
    return torch.cat([sd[n].reshape(-1).to(torch.float32) for n in sim.layout.names])


def strategy_for(sim, log: list):
    from flwr.serverapp import strategy as fs
    alg = sim.algorithm
    m = sim.clients_per_round
    common = dict(fraction_train=sim.client_fraction, fraction_evaluate=0.0,
                  min_train_nodes=m, min_available_nodes=sim.num_clients)
    # Flower's own strategy only where it is the same algorithm: a plain mean (dp-fedavg's
    # noisy mean is Flower's DP wrapper); robust aggregators, FedNova and DP on top of other
    # algorithms run the kit's pipeline
    plain = alg.aggregator_name == "mean" and (alg.dp is None or alg.name == "dp-fedavg")
    name = alg.name if plain else None
    p = alg.params
    if name == "fedavg":
        return _recording(fs.FedAvg, log)(**common)
    if name == "fedprox":
        return _recording(fs.FedProx, log)(**common, proximal_mu=p["mu"])
    if name == "fedavgm":
        return _recording(fs.FedAvgM, log)(**common, server_learning_rate=p["server_lr"],
                                           server_momentum=p["momentum"])
    if name in ("fedadam", "fedyogi"):
        cls = {"fedadam": fs.FedAdam, "fedyogi": fs.FedYogi}[name]
        return _recording(cls, log)(**common, eta=p["server_lr"], eta_l=sim.lr, beta_1=p["beta1"],
                                    beta_2=p["beta2"], tau=p["tau"])
    if name == "fedadagrad" and p["beta1"] == 0:
        # Flower's FedAdagrad has no momentum; the kit's has beta1 (its pipeline runs otherwise)
        return _recording(fs.FedAdagrad, log)(**common, eta=p["server_lr"], eta_l=sim.lr,
                                              tau=p["tau"])
    if name == "dp-fedavg":
        return fs.DifferentialPrivacyServerSideFixedClipping(
            _recording(fs.FedAvg, log)(**common), noise_multiplier=p["noise_multiplier"],
            clipping_norm=p["clip_norm"], num_sampled_clients=m)
    return _recording(_kit_pipeline(fs.FedAvg, sim), log)(**common)


def server_main(grid, context) -> None:
    """A ServerApp's main: the strategy for the kit's algorithm, evaluated after every round."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from ..simulation import evaluate
    cfg = context.run_config
    sim = simulation_of(cfg)
    sim.global_model.load_state_dict(sim.initial_state)
    log: list = []
    records: list = []
    out = Path(cfg["results-path"]) if cfg.get("results-path") else None
    clock = {"t": time.perf_counter()}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        # called before round 1 and after each round: the gaps are the round times
        t = time.perf_counter()
        model = sim.global_model
        model.load_state_dict(arrays.to_torch_state_dict())
        with torch_threads(sim.num_threads):
            acc, loss = evaluate(model, sim.test)
        if server_round > 0:
            info = next((e for e in log if e["round"] == server_round), {})
            records.append({"round": server_round, "accuracy": acc, "loss": loss,
                            "seconds": t - clock["t"], "eval_seconds": time.perf_counter() - t,
                            **info})
            if out is not None:
                out.write_text(json.dumps({"flower": FLOWER_VERSION, "strategy":
                                           type(strategy).__name__, "records": records}))
        clock["t"] = time.perf_counter()
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy = strategy_for(sim, log)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(sim.global_model.state_dict()),
                   num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({}),
                   evaluate_fn=evaluate_fn)


# -- a local deployment: SuperLink + SuperNodes as real processes --------------------------------
