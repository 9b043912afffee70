"""Which Flower is here, and which of the kit's algorithms map to Flower's own strategies."""

from __future__ import annotations

__all__ = ["FLOWER_TESTED", "MAX_SUPERNODES", "FLOWER_AVAILABLE", "FLOWER_VERSION",
           "IMPORT_ERROR", "FLOWER_STRATEGIES", "require_flower"]

FLOWER_TESTED = "1.42.0"   # the version the kit's tests run against (the "flower" extra pins it)
MAX_SUPERNODES = 32        # one process per client on one machine: more is a different lesson
try:
    import flwr
    FLOWER_AVAILABLE, FLOWER_VERSION, IMPORT_ERROR = True, flwr.__version__, ""
except ImportError as e:   # pragma: no cover - the notebook says how to install it
    FLOWER_AVAILABLE, FLOWER_VERSION, IMPORT_ERROR = False, None, str(e)

#: the kit's algorithm -> Flower's own strategy (the others run the kit's pipeline on the server)
FLOWER_STRATEGIES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedavgm": "FedAvgM",
                     "fedadam": "FedAdam", "fedyogi": "FedYogi",
                     "fedadagrad": "FedAdagrad (with beta1=0: Flower's has no momentum)",
                     "dp-fedavg": "DifferentialPrivacyServerSideFixedClipping(FedAvg)"}


def require_flower() -> None:
    if not FLOWER_AVAILABLE:
        raise ImportError(f"Flower is not installed ({IMPORT_ERROR}). Install the kit's "
                          "'flower' extra: pip install -e '.[flower]' (needs Python 3.11+)")


