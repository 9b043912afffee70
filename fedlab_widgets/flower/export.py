"""Export an experiment as a runnable Flower App: what can be exported, the run config, the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..config import RUN_PARAMETERS, RunConfig, run_parameter
from .version import FLOWER_TESTED, FLOWER_VERSION

__all__ = ["check_exportable", "app_run_config", "export_app", "to_flower", "from_flower",
           "flower_key", "pyproject_text", "toml_value"]


# -- what can be exported --------------------------------------------------------------------
def check_exportable(sim) -> None:
    from ..models import MODELS
    why = []
    if sim.model_name not in MODELS:
        why.append("the model must be a name from get_model (the server rebuilds it from the seed)")
    alg = sim.algorithm
    from ..algorithms.compat import steps_of
    steps = steps_of(alg)
    if "loss_weights" in steps:
        why.append(f"{alg.name}'s server needs each client's loss at the global model, and the "
                   "bridge's clients send only their model")
    elif "clusters" in steps:
        why.append("ifca sends every cluster model to each client and averages each cluster "
                   "apart; the bridge has one global model")
    elif alg.scaffold is not None or alg.fedper is not None or alg.own_client_steps \
            or alg.personal is not None:
        why.append(f"{alg.name} keeps state on each client across rounds, which this bridge "
                   "does not carry yet")
    if alg.secagg is not None:
        why.append("secure aggregation needs a key-agreement round between clients")
    if alg.dp is not None and alg.dp.adaptive_clipping:
        why.append("adaptive clipping needs each client's clipped-or-not bit, and the bridge's "
                   "clients send only their model")
    if alg.dp is not None and alg.dp.local_dp:
        why.append("local DP's noise must be added on each client (Flower's LocalDpMod on the "
                   "ClientApp), and the bridge clips and noises on the server")
    if alg.client_steps_list:
        why.append("custom client steps run on the client, and the bridge sends only the model")
    if sim.attack is not None:
        why.append("attacks are simulated clients' behaviour")
    if sim.dropout or sim.stragglers or sim.compression is not None or sim.local_test is not None:
        why.append("dropout, stragglers, compression and per-client test sets are simulated")
    if sim.devices is not None or sim.selection != "uniform":
        why.append("simulated devices, deadlines and client selection belong to the simulation (a "
                   "deployment has real devices, and the bridge's strategy samples uniformly)")
    if sim.asynchronous:
        why.append(f"{alg.name} is asynchronous, and the bridge's Flower strategy runs synchronous rounds")
    if sim.train.name not in ("MNIST", "FashionMNIST"):
        why.append(f"the dataset must be MNIST or Fashion-MNIST (got {sim.train.name!r})")
    if why:
        raise ValueError("this simulation cannot be exported to Flower: " + "; ".join(why))


def flower_key(name: str) -> str:
    """A run setting's key in Flower's run config (``local_epochs`` -> ``local-epochs``)."""
    return name.replace("_", "-")


def to_flower(cfg: RunConfig, rounds: int) -> dict:
    """``cfg.to_dict()`` as Flower's run config: hyphenated keys, scalar values (Flower's
    run config holds only numbers, strings and booleans: None is ``"none"``, a pair
    ``"low,high"``)."""
    d = cfg.replace(rounds=rounds).to_dict()
    return {flower_key(k): ("none" if v is None else ",".join(map(str, v)) if isinstance(v, list)
                            else v) for k, v in d.items()}


def from_flower(run_config) -> RunConfig:
    """The :class:`RunConfig` a Flower run config holds (:func:`to_flower` undone)."""
    given = {}
    for prm in RUN_PARAMETERS:
        v = run_config[flower_key(prm.name)]
        if v == "none" and prm.none:
            v = None
        elif prm.kind == "pair":
            v = tuple(float(t) for t in str(v).split(","))
        given[prm.name] = v
    return RunConfig(**given)


def app_run_config(sim, rounds: int, results: str = "") -> dict:
    """Everything a ServerApp and a ClientApp need to rebuild the experiment: the run
    settings (:func:`to_flower` of the simulation's RunConfig), the data, the algorithm."""
    p = sim.full_partition
    init = torch.cat([sim.initial_state[n].reshape(-1) for n in sim.layout.names]).double()
    return {
        "num-server-rounds": int(rounds), **to_flower(sim.settings, rounds),
        "model": sim.model_name, "dataset": sim.train.name,
        "scheme": p.scheme, "partition-params": json.dumps(p.params),
        "partition-seed": int(p.seed), "partition-fingerprint": p.fingerprint(),
        "feature-skew": json.dumps(sim.feature_skew),
        "num-clients": int(sim.num_clients),
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
name = "{name}"
version = "1.0.0"
description = "{label}"
license = "MIT"
dependencies = [{kit}, "flwr=={flwr}"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedlab-widgets"

[tool.flwr.app.components]
serverapp = "{package}.server_app:app"
clientapp = "{package}.client_app:app"

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


def pyproject_text(config: dict, *, label: str, name: str = "fedlab-kit-app",
                   package: str = "kitapp", kit: str = '"fedlab-widgets"') -> str:
    """A Flower App's ``pyproject.toml``: its components in ``package``, its run config."""
    return _PYPROJECT.format(name=name, label=label.replace('"', "'"), kit=kit, package=package,
                             flwr=FLOWER_VERSION or FLOWER_TESTED,
                             config="\n".join(f"{k} = {toml_value(v)}" for k, v in config.items()))


def toml_value(v) -> str:
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

    check_exportable(sim)
    rounds = run_parameter("rounds").check(rounds)
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise ValueError(f"{folder} exists; choose a new folder or pass overwrite=True")
        shutil.rmtree(folder)
    (folder / "kitapp").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(pyproject_text(
        app_run_config(sim, rounds, results_path), label=sim.default_label()))
    (folder / "kitapp" / "__init__.py").write_text('"""The kit\'s experiment as a Flower App."""\n')
    (folder / "kitapp" / "client_app.py").write_text(_CLIENT_APP)
    (folder / "kitapp" / "server_app.py").write_text(_SERVER_APP)
    return folder


# -- inside the Flower processes ---------------------------------------------------------------
