"""IFCA: several global models, each client trains the one that fits it best (Ghosh et al. 2020).

The Iterative Federated Clustering Algorithm keeps ``num_clusters`` models. In a round
every sampled client computes its loss at each of them on its own training data, picks
the lowest (the *cluster* it joins this round), trains that model as in FedAvg, and
sends its update; each cluster model then becomes the weighted mean of its own clients'
models (a cluster nobody joined stays as it was). Clients are never told which cluster
they belong to: the clusters form because a model that fits rotated digits keeps winning
the clients whose digits are rotated.

Here cluster 0 is the simulation's global model ``x`` (so ``num_clusters=1`` is FedAvg,
bitwise) and clusters ``1 .. J-1`` live in the server's state, drawn at random as the
paper's code draws them (PyTorch's default initialisation, from the simulation's seed).
A client is scored with the cluster model it would pick (lowest loss on its training
data); the test set, like the paper's test machines, with the model of lowest loss on it.
Choosing costs each client ``J`` forward passes over its data (about ``J / 3`` epochs).
"""

from __future__ import annotations

import math

import torch

from ..seeds import generator

__all__ = ["ClusterModels", "default_init", "purity"]

_KEY = "ifca_models"


def default_init(layout, g: torch.Generator, *, dtype=torch.float32) -> torch.Tensor:
    """A flat ``[D]`` model drawn from ``g`` as PyTorch initialises Linear and Conv layers:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and for the biases after them."""
    parts, fan_in = [], 1
    for shape in layout.shapes:
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        parts.append((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound))
    return torch.cat([p.reshape(-1) for p in parts]).to(dtype)


def purity(clusters, truth) -> float:
    """Cluster purity: the share of clients whose cluster's most common true group is theirs.

    ``clusters`` and ``truth`` give each client's cluster and true group (e.g. its rotation);
    1.0 when every cluster holds one group only (how the clusters are numbered does not matter).

    >>> purity([0, 0, 1, 1], [90, 90, 0, 0]), purity([0, 0, 0, 0], [90, 90, 0, 0])
    (1.0, 0.5)
    """
    clusters, truth = list(map(int, clusters)), list(truth)
    if len(clusters) != len(truth) or not clusters:
        raise ValueError("purity needs one true group per client, and at least one client")
    right = 0
    for c in set(clusters):
        members = [t for k, t in zip(clusters, truth) if k == c]
        right += max(members.count(t) for t in set(members))
    return right / len(clusters)


class ClusterModels:
    """IFCA's pieces: each client's choice of model, and each cluster's own average."""

    step_name = "clusters"   # what algorithms.compat checks

    def __init__(self, num_clusters: int):
        self.num_clusters = int(num_clusters)

    def models(self, ctx) -> torch.Tensor:
        """``[J, D]``: the global model (cluster 0) and the others (drawn at first use)."""
        others = ctx.state.get(_KEY)
        if others is None:
            others = torch.stack([default_init(ctx.layout, generator(ctx.seed, 41, j),
                                               dtype=ctx.x.dtype)
                                  for j in range(1, self.num_clusters)]) \
                if self.num_clusters > 1 else ctx.x.new_zeros(0, ctx.x.numel())
            ctx.state[_KEY] = others
        return torch.cat([ctx.x.unsqueeze(0), others])

    def choose(self, clients, ctx) -> torch.Tensor:
        """Each client's cluster: the model with its lowest training loss (exact ties, as
        between identical models, broken at random from the seed, the round and the client)."""
        if self.num_clusters == 1:
            return torch.zeros(len(clients), dtype=torch.int64)
        if ctx.client_loss is None:
            raise ValueError("ifca needs each client's loss at every cluster model, which only "
                             "the clients can compute (the simulation asks them)")
        loss = ctx.client_loss(self.models(ctx), list(clients))
        best = loss.min(0).values
        out = torch.empty(len(clients), dtype=torch.int64)
        for i, k in enumerate(clients):
            tied = (loss[:, i] == best[i]).nonzero().squeeze(1)
            pick = 0 if len(tied) == 1 else int(torch.randint(
                len(tied), (1,), generator=generator(ctx.seed, 43, ctx.round, int(k))))
            out[i] = tied[pick]
        return out

    def start(self, clients, ctx) -> torch.Tensor | None:
        """Where each client starts: its cluster's model (None with one cluster: the global model)."""
        ctx.clusters = self.choose(clients, ctx)
        if self.num_clusters == 1:
            return None
        return self.models(ctx).index_select(0, ctx.clusters)

    def client_step(self, updates, ctx):
        """Clusters 1..J-1 become their clients' weighted mean; cluster 0's clients pass on."""
        if self.num_clusters == 1:
            return updates
        models, cl = self.models(ctx), ctx.clusters
        others = ctx.state[_KEY]
        for j in range(1, self.num_clusters):
            rows = (cl == j).nonzero().squeeze(1)
            if len(rows):
                p = (updates.weight[rows] / updates.weight[rows].sum()).to(models.dtype)
                others[j - 1] = models[j] + p @ updates.delta[rows]
        rows = (cl == 0).nonzero().squeeze(1)
        if len(rows) == 0:     # nobody joined cluster 0: it stays as it was
            zero = updates.delta[:1].mul(0)
            return updates.replace(clients=updates.clients[:1], delta=zero,
                                   weight=updates.weight[:1], steps=updates.steps[:1],
                                   loss=updates.loss[:1])
        return updates.replace(clients=[updates.clients[i] for i in rows.tolist()],
                               delta=updates.delta[rows], weight=updates.weight[rows],
                               steps=updates.steps[rows], loss=updates.loss[rows])

    def client_models(self, clients, ctx) -> dict[int, torch.Tensor]:
        """Each client's model: the cluster model it picks now."""
        if self.num_clusters == 1:
            return {}
        models = self.models(ctx)
        choice = self.choose(clients, ctx)
        return {k: models[int(j)] for k, j in zip(clients, choice)}

    def test_models(self, ctx) -> torch.Tensor | None:
        """The models the test set picks from (lowest loss), or None for the global model."""
        return None if self.num_clusters == 1 else self.models(ctx)

