"""Vertical FL with a split model: parties hold feature blocks, one label holder the labels.

Every party ``k`` runs its **bottom model** (one linear layer and a ReLU) on its own pixels
of a batch and sends the activations ``h_k`` up; the **label holder** (who has the labels and
no pixels, like the server of Flower's vertical-fl example) concatenates them, runs the
**top model**, and sends each party the gradient of the loss with respect to its ``h_k``;
each party finishes the backward pass on its own bottom model. All in one process, but
through a :class:`~fedlab_widgets.vertical.messages.Channel`: no autograd graph crosses a
party, and every byte sent is counted.

The whole is one model, ``top(concat_k bottom_k(x[block_k]))``: split training is plain SGD
on it (:meth:`VerticalFederation.composed_model`; the tests check it step by step in float64).

Examples
--------
>>> from fedlab_widgets import load_mnist
>>> train, test = load_mnist()                                       # doctest: +SKIP
>>> fed = VerticalFederation(train, test, layout="halves", seed=0)   # doctest: +SKIP
>>> fed.fit(epochs=1)[-1]["accuracy"] > 0.9                          # doctest: +SKIP
True
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..params import Param, check_params
from ..roc import roc_auc
from ..seeds import derive_seed, generator
from .blocks import LAYOUTS, FeatureBlocks, feature_blocks
from .label_leakage import DEFENCES, norm_attack, perturb
from .messages import Channel

__all__ = ["VerticalFederation", "ComposedModel", "PARAMETERS", "LABEL_HOLDER", "sgd_step"]

LABEL_HOLDER = "label holder"

#: the settings of a vertical federation (validated by :class:`VerticalFederation`)
PARAMETERS = (
    Param("layout", "halves", kind="choice", choices=LAYOUTS.names(),
          doc="how each image's pixels are split among the parties"),
    Param("embedding", 16, kind="int", lo=1, hi=1024,
          doc="what each party sends up per example: its bottom model's output width"),
    Param("hidden", 64, kind="int", lo=1, hi=4096, doc="the label holder's top model: hidden units"),
    Param("lr", 0.1, lo=0.0, lo_open=True, hi=10.0, log=True, ui=(1e-3, 1.0), doc="every party's SGD learning rate"),
    Param("batch_size", 64, kind="int", lo=1, hi=60000, doc="examples per step"),
    Param("positive", None, kind="int", lo=0, hi=9, none="the ten digits", choices=tuple(range(10)),
          doc="a binary task: this digit (positive) against the rest"),
    Param("defence", "none", kind="choice", choices=DEFENCES,
          doc="how the label holder perturbs the gradients it sends (Li et al.)"),
    Param("noise", 1.0, lo=0.0, hi=100.0, doc="the defence's noise scale"),
    Param("seed", 0, kind="int", lo=0, hi=2 ** 63 - 1, ui=(0, 20), text="an integer from 0 to 2**63 - 1",
          doc="seeds the initial weights, the batch order and the defence's noise"),
)


class ComposedModel(nn.Module):
    """The bottom models and the top model as one ``nn.Module`` of the whole image."""

    def __init__(self, blocks: FeatureBlocks, bottoms, top):
        super().__init__()
        self.blocks = blocks
        self.bottoms = nn.ModuleList(bottoms)
        self.top = top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.blocks.split(x)
        return self.top(torch.cat([b(p) for b, p in zip(self.bottoms, parts)], dim=1))


class VerticalFederation:
    """Parties with feature blocks of the same samples, a label holder, split training.

    Parameters
    ----------
    train, test : FederatedDataset
        The aligned samples (sample ``i`` is the same digit at every party); ``test`` for
        :meth:`accuracy` after each epoch (optional).
    layout : str, FeatureBlocks or array of bool (parties, 28, 28), default "halves"
        See :func:`~fedlab_widgets.vertical.blocks.feature_blocks`.
    embedding, hidden, lr, batch_size, positive, defence, noise, seed
        See :data:`PARAMETERS` (each checked, with a message naming it and its range).
    dtype : torch.dtype, default torch.float32

    Attributes
    ----------
    channel : Channel
        Every message and its bytes.
    history : list of dict
        One row per epoch: ``epoch``, ``loss``, ``accuracy`` (and ``test_auc``, ``leak_auc``
        on a binary task), ``bytes``.
    """

    def __init__(self, train, test=None, *, layout="halves", embedding=16, hidden=64, lr=0.1,
                 batch_size=64, positive=None, defence="none", noise=1.0, seed=0,
                 dtype=torch.float32):
        given = dict(embedding=embedding, hidden=hidden, lr=lr, batch_size=batch_size,
                     positive=positive, defence=defence, noise=noise, seed=seed)
        if not isinstance(layout, (FeatureBlocks, np.ndarray)):
            given["layout"] = layout           # a name: checked against the table
        s = check_params("VerticalFederation", PARAMETERS, given)
        self.blocks = layout if isinstance(layout, FeatureBlocks) else feature_blocks(
            layout if isinstance(layout, np.ndarray) else s["layout"])
        self.settings = s
        self.train, self.test, self.dtype = train, test, dtype
        self.parties = list(self.blocks.names)
        self.binary = s["positive"] is not None
        self.channel = Channel()
        self.bottoms, self.top = self._build(s["embedding"], s["hidden"], train.num_classes)
        self._noise = generator(s["seed"], 251)
        self.epoch = 0
        self.history: list[dict] = []
        self.step_losses: list[float] = []
        #: per step: the gradients party 0 received (after the defence) and the batch's labels
        self.received: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _build(self, embedding, hidden, num_classes):
        out = 1 if self.binary else num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.settings["seed"], 250))
            bottoms = [nn.Sequential(nn.Linear(n, embedding), nn.ReLU()).to(self.dtype)
                       for n in self.blocks.sizes]
            top = nn.Sequential(nn.Linear(embedding * len(bottoms), hidden), nn.ReLU(),
                                nn.Linear(hidden, out)).to(self.dtype)
        return bottoms, top

    # -- the protocol -------------------------------------------------------------------
    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels of the task: the digit, or 1.0 for the positive digit and 0.0 for the rest."""
        return (labels == self.settings["positive"]).to(self.dtype) if self.binary else labels

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y)
        return nn.functional.cross_entropy(out, y)

    def step(self, idx: torch.Tensor) -> float:
        """One step of split training on the samples ``idx``; returns the batch's loss."""
        lr = self.settings["lr"]
        parts = self.blocks.split(self.train.images[idx].to(self.dtype))
        # 1. each party: its bottom model on its own features; activations up
        mine = [b(x) for b, x in zip(self.bottoms, parts)]
        got = [self.channel.send(h, sender=p, receiver=LABEL_HOLDER, kind="activations")
               for h, p in zip(mine, self.parties)]
        # 2. the label holder: top model, loss, its own update, a gradient per party
        for h in got:
            h.requires_grad_(True)
        y = self.targets(self.train.labels[idx])
        loss = self.loss(self.top(torch.cat(got, dim=1)), y)
        self.top.zero_grad(set_to_none=True)
        loss.backward()
        sgd_step(self.top, lr)
        down = [perturb(h.grad, self.settings["defence"], noise=self.settings["noise"],
                        generator=self._noise) for h in got]
        # 3. each party: the gradient it received, back through its own bottom model
        for k, (b, h, g, p) in enumerate(zip(self.bottoms, mine, down, self.parties)):
            g = self.channel.send(g, sender=LABEL_HOLDER, receiver=p, kind="gradients")
            if k == 0 and self.binary:
                self.received.append((g, y.detach().clone()))
            b.zero_grad(set_to_none=True)
            h.backward(g)
            sgd_step(b, lr)
        self.channel.tick()
        return float(loss.detach())

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The minibatches (sample indices) of epoch ``epoch`` (0-based), seeded."""
        order = torch.randperm(len(self.train), generator=generator(self.settings["seed"], 252, epoch))
        return list(order.split(self.settings["batch_size"]))

    def fit(self, epochs: int = 1, *, callback=None) -> list[dict]:
        """Train ``epochs`` more epochs; after each, append a row to :attr:`history`.

        ``callback(row)`` is called after each epoch (a live plot, a progress line).
        """
        epochs = check_params("fit", (Param("epochs", 1, kind="int", lo=1, hi=1000),),
                              {"epochs": epochs})["epochs"]
        for _ in range(epochs):
            start = len(self.received)
            losses = [self.step(idx) for idx in self.batches(self.epoch)]
            self.step_losses += losses
            self.epoch += 1
            row = {"epoch": self.epoch, "loss": float(np.mean(losses)), "bytes": self.channel.bytes()}
            if self.test is not None:
                row["accuracy"] = self.accuracy(self.test)
                if self.binary:
                    row["test_auc"] = self.test_auc(self.test)
            if self.binary:
                row["leak_auc"] = self.leak(epoch=self.epoch, since=start).auc
            self.history.append(row)
            if callback is not None:
                callback(row)
        return self.history

    # -- what it learned, and what leaked ------------------------------------------------
    def composed_model(self) -> ComposedModel:
        """A copy of the whole model (bottoms and top) as one module of the whole image."""
        return ComposedModel(self.blocks, copy.deepcopy(self.bottoms), copy.deepcopy(self.top))

    @torch.no_grad()
    def scores(self, dataset) -> torch.Tensor:
        """The model's outputs (logits) on ``dataset``, in batches of 2,000."""
        model = self.composed_model()
        return torch.cat([model(x.to(self.dtype)) for x in dataset.images.split(2000)])

    def accuracy(self, dataset) -> float:
        return self._hit_rate(self.scores(dataset), dataset.labels)

    def _hit_rate(self, out: torch.Tensor, labels: torch.Tensor) -> float:
        """The share of outputs (logits) that predict the task's label."""
        pred = (out.squeeze(1) > 0).to(self.dtype) if self.binary else out.argmax(1)
        return float((pred == self.targets(labels)).double().mean())

    def test_auc(self, dataset) -> float:
        """On a binary task: the model's AUC on ``dataset`` (the paper's utility measure)."""
        return roc_auc(self.scores(dataset).squeeze(1).double().numpy(),
                       self.targets(dataset.labels).numpy())

    @torch.no_grad()
    def embeddings(self, dataset, party: int = 0) -> torch.Tensor:
        """What party ``party`` sends up for every sample of ``dataset`` (``[N, embedding]``)."""
        if not 0 <= party < len(self.parties):
            raise ValueError(f"party must be an integer from 0 to {len(self.parties) - 1}; got {party}")
        x = self.blocks.split(dataset.images.to(self.dtype))[party]
        return self.bottoms[party](x)

    def leak(self, *, epoch: int | None = None, since: int = 0):
        """The norm attack of party 0 on the gradients it received since step ``since``."""
        if not self.binary:
            raise ValueError("the label leakage attack needs a binary task: pass positive=<digit>")
        rows = self.received[since:]
        if not rows:
            raise ValueError("no gradients received yet: call fit() first")
        g = torch.cat([r[0] for r in rows])
        y = torch.cat([r[1] for r in rows]).numpy()
        return norm_attack(g, y)

    def alone(self, party: int, *, epochs: int = 1) -> float:
        """Test accuracy of party ``party`` training by itself: its own pixels only, the labels
        given, the same bottom and top models (the others' activations absent) and settings."""
        if not 0 <= party < len(self.parties):
            raise ValueError(f"party must be an integer from 0 to {len(self.parties) - 1}; got {party}")
        if self.test is None:
            raise ValueError("alone() scores on the test set: pass test= to VerticalFederation")
        s = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(s["seed"], 254, party))
            model = nn.Sequential(nn.Linear(self.blocks.sizes[party], s["embedding"]), nn.ReLU(),
                                  nn.Linear(s["embedding"], s["hidden"]), nn.ReLU(),
                                  nn.Linear(s["hidden"], 1 if self.binary else self.train.num_classes))
        model = model.to(self.dtype)
        opt = torch.optim.SGD(model.parameters(), lr=s["lr"])
        x = self.blocks.split(self.train.images.to(self.dtype))[party]
        for epoch in range(epochs):
            for idx in self.batches(epoch):
                opt.zero_grad()
                self.loss(model(x[idx]), self.targets(self.train.labels[idx])).backward()
                opt.step()
        with torch.no_grad():
            out = model(self.blocks.split(self.test.images.to(self.dtype))[party])
        return self._hit_rate(out, self.test.labels)

    def step_leak_aucs(self) -> np.ndarray:
        """The norm attack's AUC on every step's batch alone (NaN for a batch of one class)."""
        out = []
        for g, y in self.received:
            y = y.numpy()
            out.append(norm_attack(g, y).auc if 0 < y.sum() < len(y) else float("nan"))
        return np.asarray(out)


@torch.no_grad()
def sgd_step(module: nn.Module, lr: float) -> None:
    """One plain SGD step of a party's module from its ``.grad``s (what each party runs locally)."""
    for p in module.parameters():
        if p.grad is not None:
            p -= lr * p.grad
