"""Malicious clients: label flipping, sign flipping, Gaussian noise and backdoors.

``Simulation(..., attack=attacks.get(name, fraction=0.2, **params))`` makes a
``fraction`` of all clients malicious, chosen once from the simulation's seed; a
malicious client attacks whenever it is sampled. Attacks use the round pipeline's
two hooks, so they run on both engines:

* **data attacks** change what a malicious client trains on, inside local training
  (a transform of each minibatch, applied by the engine): ``label_flip`` and the
  poisoning half of ``backdoor``;
* **update attacks** change what it sends, as a client step on the ``[M, D]``
  updates: ``sign_flip``, ``gaussian`` and the boosting half of ``backdoor``.

=============  ===========================================================  =========================
name           what a malicious client does                                  parameters
=============  ===========================================================  =========================
``label_flip`` trains honestly on flipped labels ``y -> 9 - y``               ``mapping`` (optional)
``sign_flip``  sends ``-scale * delta`` instead of ``delta``                  ``scale``
``gaussian``   sends Gaussian noise whose per-coordinate standard            ``scale``
               deviation is ``scale`` times the honest updates' RMS
``backdoor``   stamps a pixel pattern on a ``share`` of its images,          ``target``, ``share``,
               relabels them ``target``, trains, and sends ``boost`` times   ``boost``
               its update (model replacement: Bagdasaryan et al. 2020)
=============  ===========================================================  =========================

A backdoor's **attack success rate** is the share of triggered test images (of
every class but ``target``) that the global model classifies as ``target``;
``RoundRecord.attack_success`` holds it.

Examples
--------
>>> from fedlab_widgets import attacks
>>> attacks.get("sign_flip", fraction=0.2, scale=5)
Attack(sign_flip, fraction=0.2, scale=5)
>>> attacks.get("sign_flip", fraction=1.5)
Traceback (most recent call last):
ValueError: fraction must be a number from 0 to 1; got 1.5
"""

from __future__ import annotations

import torch

from .engines.base import ClientUpdates, LocalRule
from .params import Param
from .registry import Registry
from .seeds import generator

__all__ = ["ATTACKS", "NAMES", "PARAMETERS", "get", "Attack", "stamp_trigger"]

_FRACTION = Param("fraction", 0.2, lo=0.0, hi=1.0, ui=(0.0, 0.5),
                  doc="share of all clients that are malicious")
_HASH = 2654435761  # Knuth's multiplicative hash: which samples carry the trigger


def stamp_trigger(images: torch.Tensor, value_on: float, value_off: float) -> torch.Tensor:
    """A copy of ``images`` (``[..., H, W]``) with a 4x4 checkerboard in the bottom-right corner."""
    out = images.clone()
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    pattern = ((i + j) % 2 == 0).to(images.dtype)
    out[..., -5:-1, -5:-1] = pattern * value_on + (1 - pattern) * value_off
    return out


def _poisoned(idx: torch.Tensor, share: float) -> torch.Tensor:
    """Which sample indices carry the trigger: a fixed pseudo-random ``share`` of them."""
    return ((idx * _HASH) % (2 ** 32)).to(torch.float64) / 2 ** 32 < share


class Attack:
    """An attack: who is malicious, what they train on, what they send. Made by :func:`get`."""

    def __init__(self, name: str, params: dict, mapping=None):
        self.name, self.params = name, params
        self.fraction = params["fraction"]
        self.mapping = mapping

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"Attack({self.name}, {ps})"

    def label(self) -> str:
        """``"sign_flip 20%"``, as in run labels (a custom label_flip mapping included)."""
        m = "" if self.mapping is None else f" mapping={self.mapping.tolist()}"
        return f"{self.name} {self.fraction:.0%}{m}"

    def config(self) -> dict:
        """What the history stores: everything that changes the attack's result."""
        return {"attack": self.name, "attack_params": dict(self.params),
                **({} if self.mapping is None else {"attack_mapping": self.mapping.tolist()})}

    def check_data(self, train) -> None:
        """A ValueError now, before training, if the attack does not fit ``train``."""
        k = int(train.labels.max()) + 1
        if self.mapping is not None and len(self.mapping) != k:
            raise ValueError(f"mapping must have one entry per class: the data have {k} classes, "
                             f"the mapping has {len(self.mapping)}")

    # -- who ---------------------------------------------------------------------------------
    def choose(self, num_clients: int, seed: int) -> frozenset:
        """The malicious clients: ``round(fraction * K)`` of them, from the seed."""
        n = round(self.fraction * num_clients)
        g = generator(seed, 3)
        return frozenset(torch.randperm(num_clients, generator=g)[:n].tolist())

    # -- data attacks: inside local training ---------------------------------------------------
    def local_rule(self, rule: LocalRule, clients, malicious, train) -> LocalRule:
        """``rule`` with this attack's minibatch transform for the malicious rows (if any)."""
        make = ATTACKS.trait(self.name, "transform")
        if make is None:
            return rule
        bad = torch.tensor([k in malicious for k in clients])
        if not bool(bad.any()):
            return rule
        return LocalRule(mu=rule.mu, correction=rule.correction,
                         transform=make(self, bad, train))

    # -- update attacks: a client step ----------------------------------------------------------
    def client_step(self, updates: ClientUpdates, ctx, malicious) -> ClientUpdates:
        step = ATTACKS.trait(self.name, "step")
        bad = torch.tensor([k in malicious for k in updates.clients])
        if step is None or not bool(bad.any()):
            return updates
        return updates.replace(delta=step(self, updates, bad, ctx))

    # -- what it achieved ------------------------------------------------------------------------
    def success_rate(self, model, test) -> float:
        """What the attack achieved on ``test`` (a backdoor's success rate; NaN for the others)."""
        measure = ATTACKS.trait(self.name, "success")
        return float("nan") if measure is None else measure(self, model, test)


# -- what each attack does: its data transform, its update step, its success -----------------------
def flipped_labels(attack: Attack, bad: torch.Tensor, train):
    """label_flip: malicious rows train on ``mapping[y]`` (default ``K - 1 - y``)."""
    k = int(train.labels.max()) + 1
    flip = k - 1 - torch.arange(k) if attack.mapping is None else attack.mapping
    if len(flip) < k:
        raise ValueError(f"mapping has {len(flip)} entries; the data have {k} classes")

    def transform(rows, idx, x, y):
        b = bad[rows]
        if bool(b.any()):
            y = torch.where(b[:, None], flip[y], y)
        return x, y
    return transform


def triggered_images(attack: Attack, bad: torch.Tensor, train):
    """backdoor: a ``share`` of malicious rows' images carry the trigger and the ``target`` label."""
    on, off = float(train.images.max()), float(train.images.min())
    target, share = attack.params["target"], attack.params["share"]

    def transform(rows, idx, x, y):
        b = bad[rows]
        if not bool(b.any()):
            return x, y
        hit = b[:, None] & _poisoned(idx, share)          # [m, b]
        if not bool(hit.any()):
            return x, y
        x = torch.where(hit.view(*hit.shape, *([1] * (x.dim() - 2))),
                        stamp_trigger(x, on, off), x)
        return x, torch.where(hit, torch.full_like(y, target), y)
    return transform


def flipped_sign(attack: Attack, updates: ClientUpdates, bad, ctx) -> torch.Tensor:
    """sign_flip: malicious clients send ``-scale * delta``."""
    delta = updates.delta.clone()
    delta[bad] *= -attack.params["scale"]
    return delta


def boosted(attack: Attack, updates: ClientUpdates, bad, ctx) -> torch.Tensor:
    """backdoor: malicious clients send ``boost * delta`` (model replacement)."""
    delta = updates.delta.clone()
    delta[bad] *= attack.params["boost"]
    return delta


def gaussian_noise(attack: Attack, updates: ClientUpdates, bad, ctx) -> torch.Tensor:
    """gaussian: malicious clients send noise, ``scale`` times the honest updates' RMS."""
    delta = updates.delta.clone()
    honest = updates.delta[~bad] if bool((~bad).any()) else updates.delta
    rms = float(honest.double().pow(2).mean().sqrt())
    g = generator(ctx.seed, 4, ctx.round)
    noise = torch.randn(int(bad.sum()), delta.shape[1], generator=g, dtype=delta.dtype)
    delta[bad] = noise * (attack.params["scale"] * rms)
    return delta


@torch.inference_mode()
def backdoor_success(attack: Attack, model, test, *, batch_size: int = 256) -> float:
    """The share of triggered non-target test images the model classifies as ``target``."""
    target = attack.params["target"]
    keep = test.labels != target
    images = test.images[keep]
    on, off = float(test.images.max()), float(test.images.min())
    was = model.training
    model.eval()
    hits = 0
    for i in range(0, len(images), batch_size):
        x = stamp_trigger(images[i:i + batch_size], on, off)
        hits += int((model(x).argmax(1) == target).sum())
    model.train(was)
    return hits / max(len(images), 1)


#: the attacks (a :class:`~fedlab_widgets.registry.Registry`) and their parameters
ATTACKS = Registry("attack")
ATTACKS.add("label_flip", dict, (_FRACTION,),
            doc="malicious clients train on flipped labels (9 - y, or a mapping)",
            transform=flipped_labels)
ATTACKS.add("sign_flip", dict, (_FRACTION, Param(
    "scale", 5.0, lo=0.0, lo_open=True, hi=1000.0, log=True, ui=(0.1, 100.0),
    doc="the liar sends -scale * its update")), doc="malicious clients send -scale * their update",
    step=flipped_sign)
ATTACKS.add("gaussian", dict, (_FRACTION, Param(
    "scale", 10.0, lo=0.0, lo_open=True, hi=1000.0, log=True, ui=(0.1, 100.0),
    doc="noise standard deviation / honest updates' RMS")),
    doc="malicious clients send Gaussian noise", step=gaussian_noise)
ATTACKS.add("backdoor", dict, (
    _FRACTION,
    Param("target", 0, kind="int", lo=0, hi=9, doc="the class triggered images get"),
    Param("share", 0.5, lo=0.0, lo_open=True, hi=1.0, ui=(0.05, 1.0),
          doc="share of the attacker's images that carry the trigger"),
    Param("boost", 10.0, lo=1.0, hi=1000.0, log=True, ui=(1.0, 100.0),
          doc="the attacker scales its update by this (model replacement)")),
    doc="malicious clients stamp a trigger, relabel it as target, boost their update",
    transform=triggered_images, step=boosted, success=backdoor_success)
PARAMETERS: dict[str, tuple[Param, ...]] = ATTACKS.table()
NAMES = ATTACKS.names()



def get(name: str, *, mapping=None, **params) -> Attack:
    """An attack by name with its parameters checked against :data:`PARAMETERS`.

    Parameters
    ----------
    name : {"label_flip", "sign_flip", "gaussian", "backdoor"}
    mapping : sequence of int, optional
        ``label_flip`` only: the label each class is flipped to (default ``9 - y``).
    **params
        ``fraction`` (all attacks), ``scale`` (sign_flip, gaussian), ``target``,
        ``share``, ``boost`` (backdoor).
    """
    p = ATTACKS.build(name, **params)
    if mapping is not None:
        if name != "label_flip":
            raise ValueError(f"mapping applies to label_flip only, not {name}")
        m = torch.as_tensor(mapping)
        if m.dim() != 1 or m.is_floating_point() or len(m) < 2 or int(m.min()) < 0 \
                or int(m.max()) >= len(m):
            raise ValueError(f"mapping must list, for each class 0..K-1, the class it is flipped "
                             f"to (integers from 0 to K-1); got {mapping!r}")
        mapping = m.to(torch.int64)
    return Attack(name, p, mapping)


def resolve(attack) -> Attack | None:
    """None, an :class:`Attack`, or a name (its defaults)."""
    return ATTACKS.resolve(attack, Attack, make=get, what="attacks.get(...)")
