"""Interactive ipywidgets front ends: the partition explorer, the live FedAvg dashboard and the
live vertical federation.

They live in :mod:`fedlab_widgets.frontends` (controls generated from the tables, the
explorer, the dashboard and its training thread); this module is where notebooks find
them. Nothing in the simulation imports the front ends.
"""

from .frontends.controls import param_control
from .frontends.dashboard import FedAvgDashboard
from .frontends.explorer import PartitionExplorer, cached_partition, describe_heterogeneity
from .frontends.settings import COMPRESSION_PRESETS, SECTIONS, make_algorithm, make_attack
from .frontends.vertical_demo import VerticalDemo

__all__ = ["PartitionExplorer", "FedAvgDashboard", "cached_partition", "describe_heterogeneity",
           "param_control", "COMPRESSION_PRESETS", "SECTIONS", "make_algorithm", "make_attack",
           "VerticalDemo"]
