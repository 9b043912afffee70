"""What the instructor can make a seat do: its role, set live from the projector.

========== =============================================================== ===============
role       what the seat's laptop does in a round                          parameters
========== =============================================================== ===============
honest     trains on its writers' digits and sends its model               (none)
sign_flip  trains, then sends ``x - scale * delta`` (the kit's attack)      ``scale``
backdoor   stamps the trigger on a share of its digits, labelled           ``target``,
           ``target``, and boosts its update (the kit's attack)            ``share``, ``boost``
straggler  trains, then waits ``delay`` seconds before it replies          ``delay``
dropout    does not train and tells the server it left this round          (none)
dp         clips its update to ``clip_norm`` and adds Gaussian noise of    ``clip_norm``,
           standard deviation ``noise_multiplier * clip_norm`` (local DP)  ``noise_multiplier``
========== =============================================================== ===============

The attacks are the kit's own (:mod:`fedlab_widgets.attacks`), run on the laptop
that was told to attack: the server sees only what arrives, as a real one would.
"""

from __future__ import annotations

import torch

from ..params import Param, check_params
from ..seeds import generator

__all__ = ["ROLES", "ROLE_PARAMETERS", "check_role", "apply_role_update"]

ROLES = ("honest", "sign_flip", "backdoor", "straggler", "dropout", "dp")

ROLE_PARAMETERS = {
    "honest": (),
    "sign_flip": (Param("scale", 4.0, lo=0.0, lo_open=True, hi=100.0,
                        doc="how far the flipped update reaches"),),
    "backdoor": (Param("target", 0, kind="int", lo=0, hi=9, doc="the label the trigger selects"),
                 Param("share", 0.5, lo=0.0, lo_open=True, hi=1.0,
                       doc="share of the seat's digits that carry the trigger"),
                 Param("boost", 5.0, lo=1.0, hi=100.0, doc="how much the update is scaled")),
    "straggler": (Param("delay", 5.0, lo=0.0, hi=600.0, doc="seconds the reply waits"),),
    "dropout": (),
    "dp": (Param("clip_norm", 1.0, lo=0.0, lo_open=True, hi=1e6, doc="the update's largest norm"),
           Param("noise_multiplier", 1.0, lo=0.0, hi=100.0,
                 doc="noise std as a multiple of clip_norm")),
}


def check_role(role: str, params=None) -> dict:
    """``{"role": role, **params}`` with the role's parameters checked and filled in.

    >>> check_role("sign_flip")
    {'role': 'sign_flip', 'scale': 4.0}
    >>> check_role("spy")
    Traceback (most recent call last):
    ValueError: role must be one of honest, sign_flip, backdoor, straggler, dropout, dp; got 'spy'
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    return {"role": role, **check_params(role, ROLE_PARAMETERS[role], dict(params or {}))}


def apply_role_update(role: dict, delta: torch.Tensor, *, seed: int, round_: int,
                      seat: int) -> torch.Tensor:
    """The update a seat sends given its role (the attacks' update half, local DP's noise)."""
    kind = role["role"]
    if kind == "sign_flip":
        return -role["scale"] * delta
    if kind == "backdoor":
        return role["boost"] * delta
    if kind == "dp":
        s = role["clip_norm"]
        norm = float(delta.double().norm())
        clipped = delta * min(1.0, s / norm) if norm > 0 else delta
        g = generator(seed, 91, round_, seat)
        noise = torch.randn(delta.shape, generator=g, dtype=torch.float64)
        return (clipped.double() + noise * role["noise_multiplier"] * s).to(delta.dtype)
    return delta
