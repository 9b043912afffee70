"""Split learning: the client holds the first layers of the model, the server the rest.

The 2NN (784-200-200-10) is cut after ``cut`` of its layers. For every minibatch the client
runs its layers and sends the activations (and, in the vanilla variant, the labels) to the
server, which finishes the forward pass, computes the loss, updates its layers and sends
back the gradient at the cut; the client finishes the backward pass. In the **U-shaped**
variant the client also keeps the last layer and the labels: the server sends the middle
layer's activations back, and the labels never leave the client.

Two schedules across clients (Gupta & Raskar 2018; Thapa et al., AAAI 2022):

* ``"sequential"``: the clients take turns, each training on all its data, then handing
  its layers to the next client (through the server). It is plain SGD of the whole model
  on every client's batches in turn (checked in the tests).
* ``"splitfed"`` (SFLV1): every client trains in parallel from the round's client layers,
  the server trains a copy of its layers per client, and both halves are averaged, weighted
  by the clients' samples, after the round. It is FedAvg of the whole model with one local
  epoch and every client taking part (checked in the tests), at another price in bytes.

Examples
--------
>>> from fedlab_widgets import load_mnist, partition
>>> train, test = load_mnist()                                    # doctest: +SKIP
>>> parts = partition(train.labels, "iid", 10, seed=0)           # doctest: +SKIP
>>> sl = SplitLearning(train, test, parts, schedule="splitfed")  # doctest: +SKIP
>>> sl.fit(epochs=1)[-1]["bytes"]                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models import get_model
from ..params import Param, check_params
from ..seeds import generator
from .federation import sgd_step
from .messages import Channel

__all__ = ["SplitLearning", "PARAMETERS", "SERVER", "stages_of_2nn"]

SERVER = "server"

#: the settings of split learning (validated by :class:`SplitLearning`)
PARAMETERS = (
    Param("cut", 1, kind="int", lo=1, hi=2, doc="the 2NN's layers the client holds (from the input)"),
    Param("variant", "vanilla", kind="choice", choices=("vanilla", "u-shaped"),
          doc="u-shaped: the client also holds the last layer and the labels"),
    Param("schedule", "sequential", kind="choice", choices=("sequential", "splitfed"),
          doc="clients in turn, handing the client layers on, or in parallel and averaged"),
    Param("lr", 0.05, lo=0.0, lo_open=True, hi=10.0, log=True, ui=(1e-3, 1.0), doc="the SGD learning rate"),
    Param("batch_size", 10, kind="int", lo=1, hi=60000, doc="examples per step"),
    Param("seed", 0, kind="int", lo=0, hi=2 ** 63 - 1, ui=(0, 20), text="an integer from 0 to 2**63 - 1",
          doc="seeds the initial 2NN (the same as Simulation's for this seed) and the batch order"),
)


def stages_of_2nn(model: nn.Module) -> list[nn.Module]:
    """The 2NN as three stages: flatten, fc1, ReLU | fc2, ReLU | fc3."""
    return [nn.Sequential(nn.Flatten(), model.fc1, nn.ReLU()), nn.Sequential(model.fc2, nn.ReLU()),
            nn.Sequential(model.fc3)]


class SplitLearning:
    """Clients hold the first layers, the server the rest; trained sequentially or SplitFed.

    Parameters
    ----------
    train, test : FederatedDataset
    partition : Partition or sequence of index arrays
        Which training samples each client holds.
    cut, variant, schedule, lr, batch_size, seed
        See :data:`PARAMETERS`.
    dtype : torch.dtype, default torch.float32

    Attributes
    ----------
    channel : Channel
        Every message: activations, gradients, labels and the layers handed on.
    history : list of dict
        One row per epoch: ``epoch``, ``accuracy``, ``bytes`` (cumulative).
    """

    def __init__(self, train, test, partition, *, cut=1, variant="vanilla", schedule="sequential",
                 lr=0.05, batch_size=10, seed=0, dtype=torch.float32):
        s = check_params("SplitLearning", PARAMETERS, dict(
            cut=cut, variant=variant, schedule=schedule, lr=lr, batch_size=batch_size, seed=seed))
        if s["variant"] == "u-shaped" and s["cut"] != 1:
            raise ValueError(f"cut must be 1 with variant='u-shaped' (the server needs a layer of "
                             f"its own between the client's first and last); got {s['cut']}")
        self.settings, self.train, self.test, self.dtype = s, train, test, dtype
        self.clients = [torch.as_tensor(ix, dtype=torch.int64) for ix in _indices(partition)]
        if not self.clients or any(len(ix) == 0 for ix in self.clients):
            raise ValueError("partition: every client must hold at least one sample")
        stages = stages_of_2nn(get_model("2nn", seed=s["seed"]).to(dtype))
        c = s["cut"]
        self.front = nn.Sequential(*stages[:c])                      # the client's first layers
        if s["variant"] == "u-shaped":
            self.middle, self.head = nn.Sequential(*stages[c:2]), stages[2]
        else:
            self.middle, self.head = nn.Sequential(*stages[c:]), None
        self.channel = Channel()
        self.epoch = 0
        self.history: list[dict] = []

    # -- one minibatch ---------------------------------------------------------------
    def step(self, front, middle, head, idx, client: str) -> float:
        """One minibatch of client ``client`` through the cut and back; updates all three parts."""
        lr, send = self.settings["lr"], self.channel.send
        x, y = self.train.images[idx].to(self.dtype), self.train.labels[idx]
        a = front(x)
        a_srv = send(a, sender=client, receiver=SERVER, kind="activations").requires_grad_(True)
        m = middle(a_srv)
        if head is None:                                   # vanilla: the server holds the labels
            y_srv = send(y, sender=client, receiver=SERVER, kind="labels")
            loss = nn.functional.cross_entropy(m, y_srv)
            middle.zero_grad(set_to_none=True)
            loss.backward()
        else:                                              # U-shaped: the labels stay home
            m_cli = send(m, sender=SERVER, receiver=client, kind="activations").requires_grad_(True)
            loss = nn.functional.cross_entropy(head(m_cli), y)
            head.zero_grad(set_to_none=True)
            loss.backward()
            sgd_step(head, lr)
            g_m = send(m_cli.grad, sender=client, receiver=SERVER, kind="gradients")
            middle.zero_grad(set_to_none=True)
            m.backward(g_m)
        sgd_step(middle, lr)
        g_a = send(a_srv.grad, sender=SERVER, receiver=client, kind="gradients")
        front.zero_grad(set_to_none=True)
        a.backward(g_a)
        sgd_step(front, lr)
        self.channel.tick()
        return float(loss.detach())

    def batches(self, k: int, epoch: int) -> list[torch.Tensor]:
        """Client ``k``'s minibatches (sample indices) in epoch ``epoch``, seeded."""
        ix = self.clients[k]
        order = ix[torch.randperm(len(ix), generator=generator(self.settings["seed"], 253, epoch, k))]
        return list(order.split(self.settings["batch_size"]))

    def _client_parts(self):
        return [self.front] + ([self.head] if self.head is not None else [])

    # -- the schedules ---------------------------------------------------------------
    def _sequential_epoch(self) -> None:
        for k in range(len(self.clients)):
            name = f"client {k}"
            for part in self._client_parts():              # the client layers arrive ...
                self.channel.send_state(part, sender=SERVER, receiver=name)
            for idx in self.batches(k, self.epoch):
                self.step(self.front, self.middle, self.head, idx, name)
            for part in self._client_parts():              # ... and go back to be handed on
                self.channel.send_state(part, sender=name, receiver=SERVER)

    def _splitfed_epoch(self) -> None:
        n = torch.tensor([float(len(ix)) for ix in self.clients], dtype=torch.float64)
        weights = (n / n.sum()).tolist()
        start = [m.state_dict() for m in (self.front, self.middle, self.head) if m is not None]
        sums = None
        for k in range(len(self.clients)):
            name = f"client {k}"
            parts = [copy.deepcopy(m) for m in (self.front, self.middle, self.head) if m is not None]
            for p, st in zip(parts, start):
                p.load_state_dict(st)
            client_parts = [parts[0]] + ([parts[2]] if len(parts) == 3 else [])
            for part in client_parts:
                self.channel.send_state(part, sender=SERVER, receiver=name)
            head = parts[2] if len(parts) == 3 else None
            for idx in self.batches(k, self.epoch):
                self.step(parts[0], parts[1], head, idx, name)
            for part in client_parts:
                self.channel.send_state(part, sender=name, receiver=SERVER)
            sums = _accumulate(sums, parts, weights[k])
        for m, avg in zip([m for m in (self.front, self.middle, self.head) if m is not None], sums):
            m.load_state_dict(avg)

    def fit(self, epochs: int = 1, *, target_accuracy: float | None = None, callback=None) -> list[dict]:
        """Train ``epochs`` more epochs (each client's data once per epoch); stop early at
        ``target_accuracy`` on the test set. ``callback(row)`` after each epoch."""
        p = (Param("epochs", 1, kind="int", lo=1, hi=1000),
             Param("target_accuracy", None, lo=0.0, lo_open=True, hi=1.0, none="no target"))
        a = check_params("fit", p, {"epochs": epochs, "target_accuracy": target_accuracy})
        for _ in range(a["epochs"]):
            if self.settings["schedule"] == "sequential":
                self._sequential_epoch()
            else:
                self._splitfed_epoch()
            self.epoch += 1
            row = {"epoch": self.epoch, "bytes": self.channel.bytes(),
                   "accuracy": self.accuracy(self.test) if self.test is not None else float("nan")}
            self.history.append(row)
            if callback is not None:
                callback(row)
            if a["target_accuracy"] is not None and row["accuracy"] >= a["target_accuracy"]:
                break
        return self.history

    def model(self) -> nn.Module:
        """The whole model, a copy (client layers, server layers, and the head if U-shaped)."""
        parts = [self.front, self.middle] + ([self.head] if self.head is not None else [])
        return copy.deepcopy(nn.Sequential(*parts))

    @torch.no_grad()
    def accuracy(self, dataset) -> float:
        model = self.model()
        right = sum(int((model(x.to(self.dtype)).argmax(1) == y).sum())
                    for x, y in zip(dataset.images.split(2000), dataset.labels.split(2000)))
        return right / len(dataset)


def _indices(partition):
    return getattr(partition, "client_indices", partition)


def _accumulate(sums, parts, w):
    states = [p.state_dict() for p in parts]
    if sums is None:
        return [{k: w * v.detach().double() for k, v in st.items()} for st in states]
    for acc, st in zip(sums, states):
        for k, v in st.items():
            acc[k] += w * v.detach().double()
    return sums
