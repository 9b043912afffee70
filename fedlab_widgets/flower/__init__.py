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

from .apps import client_train, server_main, simulation_of, strategy_for
from .deployment import LocalDeployment, processes_with, run_flower
from .export import app_run_config, check_exportable, export_app
from .version import (FLOWER_AVAILABLE, FLOWER_STRATEGIES, FLOWER_TESTED, FLOWER_VERSION,
                      MAX_SUPERNODES, require_flower)

__all__ = ["FLOWER_AVAILABLE", "FLOWER_VERSION", "FLOWER_TESTED", "FLOWER_STRATEGIES",
           "MAX_SUPERNODES", "export_app", "run_flower", "LocalDeployment", "client_train",
           "server_main", "strategy_for", "processes_with", "app_run_config", "check_exportable",
           "simulation_of", "require_flower"]
