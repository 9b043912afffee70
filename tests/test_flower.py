"""The Flower bridge on a real local Deployment Engine: SuperLink and SuperNodes as processes.

Each deployment test starts real processes (about 10 s) and runs real rounds (several seconds
each: Flower starts a fresh ClientApp process per client per round). Every test checks that no
process it started is left behind.
"""

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedlab_widgets import Simulation, algorithms, attacks, partition

flower = pytest.importorskip("fedlab_widgets.flower")
if not flower.FLOWER_AVAILABLE:   # the "flower" extra is part of `make setup`: fail, do not skip
    pytest.fail("Flower is not installed: pip install -e '.[flower]'", pytrace=False)


def _processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes whose environment points into ``workdir``."""
    needle = f"FLWR_HOME={workdir}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _sim(train, test_set, k, **kw):
    kw = {"client_fraction": 1.0, "batch_size": 50, "lr": 0.1, "seed": 0, **kw}
    return Simulation("logreg", train, test_set, partition(train, "iid", k, seed=0), **kw)


def test_export_writes_a_valid_flower_app(train, test_set, tmp_path):
    from flwr.cli.config_utils import load_and_validate
    sim = _sim(train, test_set, 4, algorithm=algorithms.get("fedprox", mu=0.3))
    app = flower.export_app(sim, tmp_path / "app", rounds=5)
    config, warnings = load_and_validate(app / "pyproject.toml")
    assert config is not None and not warnings, warnings
    cfg = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert cfg["num-server-rounds"] == 5 and cfg["algorithm"] == "fedprox"
    assert cfg["partition-fingerprint"] == sim.partition.fingerprint() and cfg["batch-size"] == 50
    assert "client_train" in (app / "kitapp" / "client_app.py").read_text()
    with pytest.raises(ValueError, match="exists"):
        flower.export_app(sim, app, rounds=5)
    for bad, why in [(dict(algorithm="scaffold"), "keeps state on each client"),
                     (dict(attack=attacks.get("sign_flip", fraction=0.25)), "attacks"),
                     (dict(dropout=0.2), "dropout"),
                     (dict(algorithm=algorithms.get("fedavg", secure_aggregation=True)), "secure")]:
        with pytest.raises(ValueError, match=why):
            flower.export_app(_sim(train, test_set, 4, **bad), tmp_path / "x", rounds=1)
    with pytest.raises(ValueError, match="mode must be 'deployment'"):
        flower.run_flower(sim, 1, mode="simulation")
    with pytest.raises(ValueError, match="num_supernodes must equal"):
        flower.run_flower(sim, 1, num_supernodes=2)


@pytest.mark.parametrize("algorithm,strategy,rounds", [
    ("fedavg", "FedAvg", 2),                                              # Flower's own strategy
    (algorithms.get("fedavg", aggregator="median"), "KitPipeline", 1),    # the kit's pipeline
])
def test_full_participation_matches_the_simulation(train, test_set, tmp_path, algorithm, strategy,
                                                    rounds):
    sim = _sim(train, test_set, 3, algorithm=algorithm)
    h = flower.run_flower(sim, rounds, workdir=tmp_path)
    assert h.config["runtime"] == "flower-deployment" and h.config["flower_strategy"] == strategy
    assert [r.clients for r in h.records] == [[0, 1, 2]] * rounds
    ref = sim.run(rounds)
    np.testing.assert_allclose(h.accuracy, ref.accuracy, atol=2e-4)   # at most 2 test images
    np.testing.assert_allclose(h.loss, ref.loss, rtol=1e-4)
    np.testing.assert_allclose(h.train_loss, ref.train_loss, rtol=1e-4)
    assert (h.bytes_up == ref.bytes_up).all()
    timing = h.config["flower_timing"]
    assert len(timing) == rounds and all(len(t["client_seconds"]) == 3 for t in timing)
    assert _processes_under(tmp_path) == []


def test_partial_participation_with_flowers_fedprox(train, test_set, tmp_path):
    sim = _sim(train, test_set, 4, client_fraction=0.5,
               algorithm=algorithms.get("fedprox", mu=0.5))
    h = flower.run_flower(sim, 2, workdir=tmp_path)
    assert h.config["flower_strategy"] == "FedProx"
    assert all(len(r.clients) == 2 for r in h.records)
    # Flower samples the clients itself (unseeded), so the curves agree statistically, not
    # exactly (full participation agrees exactly: above). Every Flower round lies in the band
    # of the kit's rounds over other samplings (seeds 0-5), which one pair of clients against
    # another spans 72-88% here.
    band = np.concatenate([_sim(train, test_set, 4, client_fraction=0.5, seed=seed,
                                algorithm=algorithms.get("fedprox", mu=0.5)).run(2).accuracy
                           for seed in range(6)])
    assert ((band.min() - 0.02 < h.accuracy) & (h.accuracy < band.max() + 0.02)).all(), \
        (h.accuracy, band)
    assert h.final_accuracy > 0.75            # it learned (chance is 10%)
    assert _processes_under(tmp_path) == []


def test_every_process_is_stopped_when_a_run_fails(train, test_set, tmp_path):
    sim = _sim(train, test_set, 3)
    with pytest.raises(TimeoutError, match="did not finish within 2 s"):
        flower.run_flower(sim, 5, workdir=tmp_path, timeout=2)
    assert _processes_under(tmp_path) == []
    assert (tmp_path / "superlink.log").exists()   # the logs are kept after a failure


def test_each_algorithm_gets_flowers_strategy_or_the_kits_pipeline(train, test_set):
    from flwr.serverapp import strategy as fs
    cases = {
        "fedavg": fs.FedAvg, "fedprox": fs.FedProx, "fedavgm": fs.FedAvgM, "fedadam": fs.FedAdam,
        "fedyogi": fs.FedYogi, "dp-fedavg": fs.DifferentialPrivacyServerSideFixedClipping,
        algorithms.get("fedadagrad", beta1=0.0): fs.FedAdagrad,
    }
    for name, cls in cases.items():
        sim = _sim(train, test_set, 4, algorithm=name)
        name = sim.algorithm.name
        s = flower.strategy_for(sim, [])
        assert isinstance(s, cls), (name, type(s))
        assert name in flower.FLOWER_STRATEGIES
    s = flower.strategy_for(_sim(train, test_set, 4, algorithm=algorithms.get("fedprox", mu=0.7)), [])
    assert s.proximal_mu == 0.7 and s.fraction_train == 1.0 and s.fraction_evaluate == 0.0
    s = flower.strategy_for(_sim(train, test_set, 4, lr=0.05,
                              algorithm=algorithms.get("fedadam", server_lr=0.02)), [])
    assert (s.eta, s.eta_l, s.beta_1, s.beta_2, s.tau) == (0.02, 0.05, 0.9, 0.99, 1e-3)
    dp = flower.strategy_for(_sim(train, test_set, 4, client_fraction=0.5, algorithm=algorithms.get(
        "dp-fedavg", clip_norm=0.3, noise_multiplier=1.5)), [])
    assert (dp.noise_multiplier, dp.clipping_norm, dp.num_sampled_clients) == (1.5, 0.3, 2)
    for alg in ("fednova", algorithms.get("fedavg", aggregator="krum", num_byzantine=0),
                algorithms.get("fedprox", mu=0.1, differential_privacy=True),
                "fedadagrad"):   # the kit's fedadagrad has server momentum (beta1 = 0.9)
        s = flower.strategy_for(_sim(train, test_set, 4, algorithm=alg), [])
        assert type(s).__name__ == "KitPipeline"


def test_ctrl_c_stops_every_process(tmp_path):
    """Interrupt a run (SIGINT, as Ctrl-C or the notebook's stop button does) once the
    deployment is up: run_flower stops the SuperLink, the SuperNodes and their children."""
    import signal
    import subprocess
    import sys
    import time
    # a background job may inherit SIGINT ignored: give the child Python's own handler back
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from fedlab_widgets import Simulation, load_mnist, partition\n"
            "from fedlab_widgets.flower import run_flower\n"
            "train, test = load_mnist()\n"
            "sim = Simulation('logreg', train, test, partition(train, 'iid', 2, seed=0), "
            "client_fraction=1.0, batch_size=50)\n"
            f"run_flower(sim, 50, workdir={str(tmp_path)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "flwr-run.log").exists():   # the app has been submitted
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() - t0 < 120, "the deployment did not start"
            time.sleep(0.2)
        time.sleep(3)
        assert _processes_under(tmp_path), "the deployment should be running"
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode != 0 and "KeyboardInterrupt" in out
        assert _processes_under(tmp_path) == []
    finally:   # whatever happened, leave nothing running for the rest of the suite
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in flower.processes_with(f"FLWR_HOME={tmp_path / 'flwr-home'}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_client_that_dies_mid_run_ends_the_run_promptly(train, test_set, tmp_path):
    """Kill one SuperNode (a client's process group) once the run is under way: run_flower
    raises at once, naming the lost client, and leaves no process behind (it used to wait
    for the lost client's reply until its time-out)."""
    import signal
    import threading
    import time
    sim = _sim(train, test_set, 2)
    killed = {}

    def kill_client_1():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            log = tmp_path / "flwr-run.log"
            if log.exists() and "ROUND 2" in log.read_text(errors="replace").upper():
                for pid in os.listdir("/proc"):
                    if not pid.isdigit():
                        continue
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                        env = Path(f"/proc/{pid}/environ").read_bytes()
                    except OSError:
                        continue
                    if (b"flower-supernode" in cmd and b"partition-id=1" in cmd
                            and f"FLWR_HOME={tmp_path}".encode() in env):
                        os.killpg(int(pid), signal.SIGKILL)
                        killed["at"] = time.monotonic()
                        return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_client_1, daemon=True)
    watcher.start()
    with pytest.raises(RuntimeError, match=r"lost SuperNode 1 \(client 1\)"):
        flower.run_flower(sim, 50, workdir=tmp_path, timeout=300)
    ended = time.monotonic()
    watcher.join(5)
    assert "at" in killed and ended - killed["at"] < 15     # promptly, not at the time-out
    assert _processes_under(tmp_path) == []
