"""The same experiment on Flower: real client processes talking gRPC/HTTP, no Ray.

:func:`export_app` turns a :class:`~fedlab_widgets.Simulation` into a runnable
Flower App: a folder with its ``pyproject.toml``, a ``ClientApp`` whose training
step is the kit's own local training on the client's partition, and a
``ServerApp`` that uses Flower's own strategy where one exists (FedAvg, FedProx,
FedAvgM, FedAdam, FedYogi, FedAdagrad, and Flower's server-side DP wrapper for
``dp-fedavg``) and the kit's round pipeline where it does not (FedNova, robust
aggregators, the kit's server steps). :func:`run_flower` starts a local
Flower **Deployment Engine** (one SuperLink and one SuperNode per client, real
processes on the loopback interface), runs the app with ``flwr run``, collects
the global model's test accuracy per round into a :class:`~fedlab_widgets.History`
and shuts every process down, also on error or Ctrl-C.

With full participation (``client_fraction=1``) and the same seed, clients train
on the same data in the same order as in the simulation, so the curves agree to
float rounding. With ``client_fraction < 1`` Flower samples the clients itself,
so the curves agree only statistically.

Needs the ``flower`` extra (``pip install -e '.[flower]'``: Flower 1.42, Python
3.11 or newer). To take the generated app to real devices, see notebook 13 and
the README: the SuperLink on a server, one SuperNode per device with
``--node-config "partition-id=K num-partitions=N"``, ``flwr run`` with a
connection entry in ``$FLWR_HOME/config.toml``, and TLS and SuperNode
authentication for anything beyond a classroom.

Examples
--------
>>> from fedlab_widgets import load_mnist, partition, Simulation
>>> from fedlab_widgets.flower import export_app, run_flower
>>> train, test = load_mnist()
>>> sim = Simulation("logreg", train, test, partition(train, "iid", 4, seed=0),
...                  client_fraction=1.0, batch_size=50)
>>> folder = export_app(sim, "my-flower-app", rounds=3)            # doctest: +SKIP
>>> history = run_flower(sim, 3)                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .config import run_parameter
from .history import History, RoundRecord
from .threads import torch_threads

__all__ = ["FLOWER_AVAILABLE", "FLOWER_VERSION", "FLOWER_TESTED", "FLOWER_STRATEGIES",
           "export_app", "run_flower", "LocalDeployment", "client_train", "server_main"]

FLOWER_TESTED = "1.42.0"   # the version the kit's tests run against (the "flower" extra pins it)
MAX_SUPERNODES = 32        # one process per client on one machine: more is a different lesson
try:
    import flwr
    FLOWER_AVAILABLE, FLOWER_VERSION, _IMPORT_ERROR = True, flwr.__version__, ""
except ImportError as e:   # pragma: no cover - the notebook says how to install it
    FLOWER_AVAILABLE, FLOWER_VERSION, _IMPORT_ERROR = False, None, str(e)

#: the kit's algorithm -> Flower's own strategy (the others run the kit's pipeline on the server)
FLOWER_STRATEGIES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedavgm": "FedAvgM",
                     "fedadam": "FedAdam", "fedyogi": "FedYogi",
                     "fedadagrad": "FedAdagrad (with beta1=0: Flower's has no momentum)",
                     "dp-fedavg": "DifferentialPrivacyServerSideFixedClipping(FedAvg)"}


def _require_flower() -> None:
    if not FLOWER_AVAILABLE:
        raise ImportError(f"Flower is not installed ({_IMPORT_ERROR}). Install the kit's "
                          "'flower' extra: pip install -e '.[flower]' (needs Python 3.11+)")


# -- what can be exported --------------------------------------------------------------------
def _check_exportable(sim) -> None:
    from .models import MODELS
    why = []
    if sim.model_name not in MODELS:
        why.append("the model must be a name from get_model (the server rebuilds it from the seed)")
    alg = sim.algorithm
    if alg.scaffold is not None or alg.fedper is not None:
        why.append(f"{alg.name} keeps state on each client across rounds, which this bridge "
                   "does not carry yet")
    if alg.secagg is not None:
        why.append("secure aggregation needs a key-agreement round between clients")
    if alg.client_steps_list:
        why.append("custom client steps run on the client, and the bridge sends only the model")
    if sim.attack is not None:
        why.append("attacks are simulated clients' behaviour")
    if sim.dropout or sim.stragglers or sim.compression is not None or sim.local_test is not None:
        why.append("dropout, stragglers, compression and per-client test sets are simulated")
    if sim.train.name not in ("MNIST", "FashionMNIST"):
        why.append(f"the dataset must be MNIST or Fashion-MNIST (got {sim.train.name!r})")
    if why:
        raise ValueError("this simulation cannot be exported to Flower: " + "; ".join(why))


def _run_config(sim, rounds: int, results: str = "") -> dict:
    """Everything a ServerApp and a ClientApp need to rebuild the experiment."""
    p = sim.full_partition
    init = torch.cat([sim._initial_state[n].reshape(-1) for n in sim.layout.names]).double()
    return {
        "num-server-rounds": int(rounds),
        "model": sim.model_name, "dataset": sim.train.name,
        "scheme": p.scheme, "partition-params": json.dumps(p.params),
        "partition-seed": int(p.seed), "partition-fingerprint": p.fingerprint(),
        "num-clients": int(sim.num_clients), "client-fraction": float(sim.client_fraction),
        "local-epochs": int(sim.local_epochs),
        "batch-size": 0 if sim.batch_size is None else int(sim.batch_size),
        "lr": float(sim.lr), "seed": int(sim.seed), "engine": sim.engine_name,
        "algorithm": sim.algorithm.name, "algorithm-params": json.dumps(sim.algorithm.params),
        "aggregator": sim.algorithm.aggregator_name,
        "aggregator-params": json.dumps(sim.algorithm.aggregator_params),
        "differential-privacy": sim.algorithm.dp is not None,
        "dp-params": json.dumps({} if sim.algorithm.dp is None else sim.algorithm.dp.params),
        "initial-checksum": float(init.abs().sum()),
        "results-path": results,
    }


_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedlab-kit-app"
version = "1.0.0"
description = "{label}"
license = "MIT"
dependencies = ["fedlab-widgets", "flwr=={flwr}"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedlab-widgets"

[tool.flwr.app.components]
serverapp = "kitapp.server_app:app"
clientapp = "kitapp.client_app:app"

# The experiment, as exported from the kit (override with flwr run --run-config 'key=value')
[tool.flwr.app.config]
{config}
"""

_CLIENT_APP = '''\
"""ClientApp: one client of the kit's experiment, as a Flower client.

Each SuperNode is one client; its node config says which ("partition-id"). On a
train message the client loads the global model, runs the kit's own local training
(E epochs of minibatch SGD, in the same data order as the simulation) on its
partition, and replies with its new model and its number of samples.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedlab_widgets.flower import client_train

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return client_train(msg, context)
'''

_SERVER_APP = '''\
"""ServerApp: the kit's experiment on Flower's server side.

Flower's own strategy where one exists (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi,
FedAdagrad, the server-side DP wrapper); the kit's round pipeline otherwise. After
every round the global model is evaluated on the test set.
"""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedlab_widgets.flower import server_main

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    server_main(grid, context)
'''


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def export_app(sim, folder, *, rounds: int, overwrite: bool = False, results_path: str = "") -> Path:
    """Write ``sim``'s experiment as a runnable Flower App into ``folder``.

    Parameters
    ----------
    sim : Simulation
        Its settings (model name, partition, C, E, B, lr, seed, algorithm) are
        exported; its current weights are not (the server starts from the seed).
    folder : path
        Created; must not exist unless ``overwrite``.
    rounds : int
        ``num-server-rounds`` of the app.

    Returns
    -------
    Path
        The app folder (``pyproject.toml``, ``kitapp/client_app.py``,
        ``kitapp/server_app.py``), ready for ``flwr run``.

    Raises
    ------
    ValueError
        For what the bridge does not carry (client state, attacks, simulated
        failures); the message says which.
    """

    _check_exportable(sim)
    rounds = run_parameter("rounds").check(rounds)
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise ValueError(f"{folder} exists; choose a new folder or pass overwrite=True")
        shutil.rmtree(folder)
    (folder / "kitapp").mkdir(parents=True)
    config = "\n".join(f"{k} = {_toml_value(v)}"
                       for k, v in _run_config(sim, rounds, results_path).items())
    (folder / "pyproject.toml").write_text(_PYPROJECT.format(
        label=sim.default_label().replace('"', "'"), flwr=FLOWER_VERSION or FLOWER_TESTED,
        config=config))
    (folder / "kitapp" / "__init__.py").write_text('"""The kit\'s experiment as a Flower App."""\n')
    (folder / "kitapp" / "client_app.py").write_text(_CLIENT_APP)
    (folder / "kitapp" / "server_app.py").write_text(_SERVER_APP)
    return folder


# -- inside the Flower processes ---------------------------------------------------------------
_SIMS: dict = {}
_STARTED = time.time()


def _simulation(cfg) -> "Simulation":
    """The experiment rebuilt from the run config, once per process."""
    key = json.dumps({k: cfg[k] for k in sorted(cfg) if k not in ("results-path",)})
    if key not in _SIMS:
        from . import algorithms
        from .datasets import load_fashion_mnist, load_mnist
        from .partition import partition
        from .simulation import Simulation
        train, test = (load_mnist if cfg["dataset"] == "MNIST" else load_fashion_mnist)()
        parts = partition(train.labels, cfg["scheme"], int(cfg["num-clients"]),
                          seed=int(cfg["partition-seed"]), **json.loads(cfg["partition-params"]))
        if parts.fingerprint() != cfg["partition-fingerprint"]:
            raise RuntimeError("this process rebuilt a different partition than the exported one "
                               "(different data files or kit version?)")
        agg = cfg["aggregator"]
        alg = algorithms.get(cfg["algorithm"], **json.loads(cfg["algorithm-params"]),
                             **json.loads(cfg["aggregator-params"]),
                             **({"aggregator": agg} if agg not in ("mean", "fednova") else {}),
                             **({"differential_privacy": True, **json.loads(cfg["dp-params"])}
                                if cfg["differential-privacy"] and cfg["algorithm"] != "dp-fedavg"
                                else {}))
        b = int(cfg["batch-size"]) or None
        sim = Simulation(cfg["model"], train, test, parts, client_fraction=float(cfg["client-fraction"]),
                         local_epochs=int(cfg["local-epochs"]), batch_size=b, lr=float(cfg["lr"]),
                         algorithm=alg, seed=int(cfg["seed"]), engine=cfg["engine"])
        init = sim.layout.flatten(sim.global_model.parameters()).double().abs().sum()
        if not math.isclose(float(init), float(cfg["initial-checksum"]), rel_tol=1e-9):
            raise RuntimeError("this process rebuilt a different initial model than the exported one")
        _SIMS[key] = sim
    return _SIMS[key]


def client_train(msg, context):
    """A ClientApp's train step: the kit's local training on this SuperNode's partition."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from .engines import LocalRule

    t0 = time.time()
    sim = _simulation(context.run_config)
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
    from .algorithms import RoundContext
    from .engines.base import ClientUpdates

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
            alg = sim.algorithm
            # the server process's simulation keeps the server state (optimiser moments, ...)
            ctx = RoundContext(round=server_round, x=x, lr=sim.lr, num_clients=sim.num_clients,
                               total_samples=sim.total_samples, state=sim.server_state,
                               seed=sim.seed, clients_per_round=sim.clients_per_round)
            model = sim.global_model
            with torch.no_grad():
                updates = alg.client_steps(updates, ctx)
                x_new = alg.server_update(x, alg.server_steps(alg.aggregate(updates), ctx), ctx)
                torch._foreach_copy_(list(model.parameters()), layout.views(x_new))
            return ArrayRecord(model.state_dict()), None
    return KitPipeline


def _flat(sim, arrays) -> torch.Tensor:
    sd = arrays.to_torch_state_dict()
    return torch.cat([sd[n].reshape(-1).to(torch.float32) for n in sim.layout.names])


def _strategy(sim, log: list):
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
    from .simulation import evaluate
    cfg = context.run_config
    sim = _simulation(cfg)
    sim.global_model.load_state_dict(sim._initial_state)
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

    strategy = _strategy(sim, log)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(sim.global_model.state_dict()),
                   num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({}),
                   evaluate_fn=evaluate_fn)


# -- a local deployment: SuperLink + SuperNodes as real processes --------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the {what} did not open port {port} within {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _processes_with(env_entry: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``env_entry`` (Linux /proc)."""
    needle = env_entry.encode() + b"\0"
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes() + b"\0" and \
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(d.name))
        except (OSError, IndexError):
            continue
    return found


class LocalDeployment:
    """A SuperLink and ``num_supernodes`` SuperNodes on this machine, as real processes.

    Insecure mode on the loopback interface, telemetry and update checks off, no
    runtime dependency installation. Use as a context manager: every process (and
    the ClientApp and ServerApp processes they start) is stopped on exit, also on
    an error or Ctrl-C. ``run(app)`` submits an app with ``flwr run`` and waits
    for it to finish.
    """

    def __init__(self, num_supernodes: int, *, workdir=None, startup_timeout: float = 60.0):
        _require_flower()
        self.num_supernodes = num_supernodes
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fedlab-flower-") if workdir is None else workdir)
        self.startup_timeout = startup_timeout
        self.procs: list[subprocess.Popen] = []
        self.port = _free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr-home"),
                    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "PYTHONUNBUFFERED": "1",
                    # flower-superlink starts flower-superexec etc. by name: this interpreter's
                    "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "kit"\n\n[superlink.kit]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        exe = Path(sys.executable).parent / args[0]
        # its own session: stopping the group stops the ClientApp/ServerApp processes too
        out = log.open("w")
        proc = subprocess.Popen([str(exe) if exe.exists() else args[0], *args[1:]],
                                stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.workdir, start_new_session=True)
        out.close()  # the child has its own copy
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start(self) -> "LocalDeployment":
        link = self._spawn("superlink", ["flower-superlink", "--insecure", "--port", str(self.port),
                                         "--disable-runtime-dependency-installation"])
        _wait_for_port(self.port, link, link.log, "SuperLink", self.startup_timeout)
        for k in range(self.num_supernodes):
            port = _free_port()
            node = self._spawn(f"supernode-{k}", [
                "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(port), "--node-config",
                f"partition-id={k} num-partitions={self.num_supernodes}"])
            _wait_for_port(port, node, node.log, f"SuperNode {k}", self.startup_timeout)
        return self

    def run(self, app, *, timeout: float = 600.0) -> str:
        """``flwr run app`` on this deployment; returns its output (RuntimeError on failure)."""
        proc = self._spawn("flwr-run", ["flwr", "run", str(Path(app).resolve()), "kit", "--stream"])
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the Flower run did not finish within {timeout:.0f} s:\n"
                               f"{_tail(proc.log)}") from None
        out = proc.log.read_text(errors="replace")
        if proc.returncode != 0 or "Traceback" in out:
            raise RuntimeError(f"the Flower run failed (exit code {proc.returncode}):\n"
                               f"{_tail(proc.log, 25)}")
        return out

    def stop(self) -> None:
        """Stop every process group started here: TERM, then KILL after 10 s."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:   # the group: ClientApp/ServerApp children may outlive their parent
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(5)
        self.procs.clear()
        # SuperNodes start their SuperExec in a session of its own: find what is left by the
        # environment every process started here inherits, and stop it too
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = _processes_with(f"FLWR_HOME={self.env['FLWR_HOME']}")
            for pid in left:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            t0 = time.monotonic()
            while left and time.monotonic() - t0 < 5:
                time.sleep(0.1)
                left = _processes_with(f"FLWR_HOME={self.env['FLWR_HOME']}")
            if not left:
                break

    def __enter__(self) -> "LocalDeployment":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir and not exc[0]:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run_flower(sim, rounds: int, *, mode: str = "deployment", num_supernodes: int | None = None,
               timeout: float = 600.0, workdir=None) -> History:
    """Run ``sim``'s experiment on a local Flower deployment and return its History.

    Parameters
    ----------
    sim : Simulation
        The experiment (its settings, not its current weights: Flower starts from
        the seed's initial model, as a fresh simulation does).
    rounds : int
    mode : {"deployment"}
        The Deployment Engine: one SuperLink and one SuperNode per client as real
        processes on the loopback interface (no Ray). Flower's simulation runtime
        needs Ray, which often fails to start on a busy 2-core machine, so it is
        not offered here.
    num_supernodes : int, optional
        Must equal ``sim.num_clients`` (one SuperNode is one client), at most 32.
    timeout : float, default 600
        Seconds for the whole run.
    workdir : path, optional
        Where the app, the logs and the results go (default: a temporary folder,
        removed after a successful run and kept, with its logs, after a failure).

    Returns
    -------
    History
        Accuracy and loss of the global model after each round (evaluated on the
        server), the clients that took part, their mean training loss, bytes and
        wall-clock seconds per round; ``config["runtime"]`` says it came from Flower.
    """

    _require_flower()
    if mode != "deployment":
        raise ValueError(f"mode must be 'deployment' (Flower's simulation runtime needs Ray, which "
                         f"often fails to start on a busy 2-core machine); got {mode!r}")
    rounds = run_parameter("rounds").check(rounds)
    _check_exportable(sim)
    n = sim.num_clients if num_supernodes is None else num_supernodes
    if n != sim.num_clients or not 1 <= n <= MAX_SUPERNODES:
        raise ValueError(f"num_supernodes must equal the simulation's number of clients "
                         f"({sim.num_clients}): each SuperNode is one client; and at most "
                         f"{MAX_SUPERNODES} on one machine; got {n}")
    dep = LocalDeployment(n, workdir=workdir)
    results = dep.workdir / "results.json"
    app = export_app(sim, dep.workdir / "app", rounds=rounds, overwrite=True,
                     results_path=str(results))
    t0 = time.perf_counter()
    with dep:
        started = time.perf_counter() - t0
        out = dep.run(app, timeout=timeout)
        try:
            data = json.loads(results.read_text())
            assert len(data["records"]) == rounds
        except (OSError, ValueError, KeyError, AssertionError):
            raise RuntimeError(f"the Flower run ended without {rounds} evaluated rounds; its "
                               f"output ends with:\n{out[-3000:]}") from None
    timing = [{k: r.get(k) for k in ("round", "seconds", "eval_seconds", "client_seconds",
                                      "setup_seconds", "process_seconds")} for r in data["records"]]
    h = History(config={**sim.config(), "runtime": "flower-deployment",
                        "flower_version": FLOWER_VERSION, "flower_strategy": data["strategy"],
                        "startup_seconds": started, "flower_timing": timing},
                label=f"Flower deployment: {sim.default_label()}")
    down, up = sim.algorithm.bytes_per_client(sim.num_parameters, sim.clients_per_round)
    for r in data["records"]:
        clients = r.get("clients", [])
        w = np.array(r.get("weight", []), dtype=float)
        loss = float((w * np.array(r.get("client_loss", []))).sum() / w.sum()) if len(w) else math.nan
        h.records.append(RoundRecord(
            round=int(r["round"]), accuracy=float(r["accuracy"]), loss=float(r["loss"]),
            train_loss=loss, clients=clients, bytes_down=down * len(clients),
            bytes_up=up * len(clients), seconds=float(r["seconds"]),
            samples=int(w.sum()) * sim.local_epochs, reported=len(clients),
            note=f"{r.get('failures', 0)} failures" if r.get("failures") else ""))
    return h
