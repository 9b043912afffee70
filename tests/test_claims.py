"""The notebooks' claims on more seeds than a learner should wait for.

A notebook asserts its teaching claim on the seed it shows; the other seeds behind the
claim (and behind the guide's figures) run here, at the notebook's own settings.
"""

import pytest

from fedlab_widgets import Simulation, partition


@pytest.mark.parametrize("seed", [1, 2])
def test_06_scaffold_beats_fedavg_on_shards(train, test_set, seed):
    """06-client-drift-remedies: K=100 shards, C=0.1, E=5, B=50, lr=0.05, 15 rounds."""
    shards = partition(train, "shards", 100, seed=0)
    settings = dict(client_fraction=0.1, local_epochs=5, batch_size=50, lr=0.05, seed=seed)
    final = {name: Simulation("2nn", train, test_set, shards, **settings, algorithm=name).run(15)
             .final_accuracy for name in ("fedavg", "scaffold")}
    assert final["scaffold"] > final["fedavg"] + 0.01, final
