"""When parties hold different features: vertical FL, split learning, and what gradients leak.

* :mod:`.blocks`: which pixels each party holds (halves, rows, thirds, quadrants, or masks);
* :mod:`.messages`: the wire between parties, counting every byte;
* :mod:`.federation`: :class:`VerticalFederation`, parties' bottom models and a label holder's top model;
* :mod:`.split`: :class:`SplitLearning`, the model cut between clients and a server (vanilla or
  U-shaped; sequential or SplitFed);
* :mod:`.label_leakage`: the norm and direction attacks of Li et al. (ICLR 2022) and their defences;
* :mod:`.costs`: bytes per epoch of split learning and of FedAvg, as formulas.

>>> from fedlab_widgets.vertical import feature_blocks
>>> feature_blocks("quadrants").sizes
[196, 196, 196, 196]
"""

from .blocks import LAYOUTS, FeatureBlocks, feature_blocks
from .costs import fedavg_bytes_per_epoch, split_bytes_per_epoch
from .federation import LABEL_HOLDER, ComposedModel, VerticalFederation
from .federation import PARAMETERS as VERTICAL_PARAMETERS
from .label_leakage import DEFENCES, LeakResult, direction_attack, norm_attack, perturb, roc_auc, roc_curve
from .messages import Channel
from .split import PARAMETERS as SPLIT_PARAMETERS
from .split import SERVER, SplitLearning

__all__ = [
    "feature_blocks", "FeatureBlocks", "LAYOUTS", "Channel",
    "VerticalFederation", "ComposedModel", "VERTICAL_PARAMETERS", "LABEL_HOLDER",
    "SplitLearning", "SPLIT_PARAMETERS", "SERVER",
    "norm_attack", "direction_attack", "perturb", "roc_auc", "roc_curve", "LeakResult", "DEFENCES",
    "split_bytes_per_epoch", "fedavg_bytes_per_epoch",
]
