"""The command line end to end, in a real subprocess."""

import json
import os
import subprocess
import sys

import pytest

from fedlab_widgets import History


def cli(*args, timeout=300):
    env = {**os.environ, "FEDLAB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "fedlab_widgets", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_run_writes_history_and_plot(tmp_path, mnist):
    out = tmp_path / "run"
    r = cli("run", "--model", "2nn", "--partition", "dirichlet", "--alpha", "0.3", "--clients", "100",
            "--fraction", "0.1", "--local-epochs", "1", "--batch-size", "10", "--lr", "0.05",
            "--rounds", "3", "--target", "0.99", "--seed", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "final accuracy" in r.stdout and "rounds to 0.99: not reached in 3" in r.stdout
    assert "3/3" in r.stderr  # the tqdm progress bar
    h = json.loads((out / "history.json").read_text())
    assert len(h["records"]) == 3 and h["config"]["scheme"] == "dirichlet"
    assert h["config"]["partition_params"]["alpha"] == 0.3
    assert 0.3 < h["records"][-1]["accuracy"] <= 1
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"


def test_run_with_an_algorithm_and_its_parameters(tmp_path, mnist):
    out = tmp_path / "scaffold"
    r = cli("run", "--partition", "shards", "--clients", "20", "--fraction", "0.2",
            "--batch-size", "50", "--lr", "0.05", "--rounds", "2", "--algorithm", "scaffold",
            "--server-lr", "0.5", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("scaffold(server_lr=0.5), 2nn, shards")
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["algorithm"] == "scaffold"
    assert h["config"]["algorithm_params"] == {"server_lr": 0.5}
    assert h["records"][0]["bytes_up"] == 2 * 4 * 199_210 * 4   # x and c, 4 clients


def test_run_with_privacy_and_secure_aggregation(tmp_path, mnist):
    out = tmp_path / "dp"
    r = cli("run", "--model", "logreg", "--clients", "20", "--fraction", "0.25", "--batch-size", "50",
            "--rounds", "2", "--algorithm", "fedprox", "--mu", "0.1", "--dp", "--clip-norm", "0.5",
            "--noise-multiplier", "2", "--secure-aggregation", "--secagg-dropout", "0.2",
            "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "privacy spent: epsilon" in r.stdout and "5 of 20 clients" in r.stdout
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["dp_params"]["clip_norm"] == 0.5 and h["config"]["secure_aggregation"]
    assert 0 < h["records"][0]["epsilon"] < h["records"][1]["epsilon"]
    assert h["records"][0]["bytes_up"] > 5 * 4 * 7850       # keys and shares on top
    for args, msg in [(("--clip-norm", "1"), "--clip-norm does not apply to --algorithm fedavg "
                       "(add --dp for privacy)"),
                      (("--secagg-dropout", "0.1"), "add --secure-aggregation"),
                      (("--secure-aggregation", "--aggregator", "median"),
                       "secure aggregation hides from the server")]:
        bad = cli("run", "--rounds", "1", *args)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr


def test_run_with_an_attack_and_a_robust_aggregator(tmp_path, mnist):
    out = tmp_path / "attack"
    r = cli("run", "--clients", "20", "--fraction", "0.5", "--batch-size", "50", "--lr", "0.05",
            "--rounds", "2", "--attack", "backdoor", "--attack-fraction", "0.2", "--attack-boost", "5",
            "--aggregator", "trimmed_mean", "--trim-ratio", "0.2", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "backdoor attack success rate" in r.stdout
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["aggregator"] == "trimmed_mean" and h["config"]["attack"] == "backdoor"
    assert h["config"]["attack_params"]["boost"] == 5.0 and len(h["config"]["malicious_clients"]) == 4


def test_partition_prints_summary_and_saves_heatmap(tmp_path, mnist):
    r = cli("partition", "--partition", "shards", "--clients", "100", "--plot", str(tmp_path / "h.png"))
    assert r.returncode == 0, r.stderr
    assert "shards(shards_per_client=2), 100 clients" in r.stdout and "effective classes" in r.stdout
    assert (tmp_path / "h.png").stat().st_size > 10_000


@pytest.mark.parametrize("args,needle", [
    (["run", "--lr", "0"], "lr must be a number > 0"),
    (["run", "--fraction", "2"], "client_fraction must be a number in (0, 1]"),
    (["run", "--rounds", "0"], "rounds must be an integer >= 1"),
    (["run", "--batch-size", "ten"], "--batch-size: batch_size must be an integer >= 1, or None for full batch; got 'ten'"),
    (["run", "--partition", "zipf"], "invalid choice: 'zipf'"),
    (["run", "--partition", "iid", "--alpha", "0.3"], "--alpha does not apply to --partition iid"),
    (["partition", "--partition", "dirichlet", "--alpha", "-1"], "alpha must be a number > 0"),
    (["run", "--algorithm", "fedsgd"], "invalid choice: 'fedsgd'"),
    (["run", "--algorithm", "fedprox", "--mu", "-1"], "mu must be a number from 0 to 10; got -1.0"),
    (["run", "--algorithm", "fedavg", "--mu", "0.1"], "--mu does not apply to --algorithm fedavg"),
    (["run", "--algorithm", "fedadagrad", "--beta2", "0.9"],
     "--beta2 does not apply to --algorithm fedadagrad"),
    (["run", "--out", __file__], f"--out {__file__} is a file"),
    (["run", "--out", f"{__file__}/sub"], "cannot make that folder"),
    (["partition", "--plot", f"{__file__}/sub/x.png"], "cannot make its folder"),
    (["run", "--target", "97"], "--target-accuracy/--target: target_accuracy must be a number in (0, 1]"),
    (["run", "--aggregator", "krum", "--trim-ratio", "0.1"], "--trim-ratio does not apply to --aggregator krum"),
    (["run", "--attack-scale", "2"], "--attack-scale does not apply to --attack none"),
    (["run", "--attack", "sign_flip", "--attack-fraction", "2"], "fraction must be a number from 0 to 1"),
    (["partition", "--clients", "0"], "num_clients must be an integer from 1"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
])
def test_bad_flags_exit_nonzero_with_one_line(args, needle):
    r = cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedlab-widgets: error:") and needle in lines[0], r.stderr


def test_missing_data_exits_with_the_loader_message(tmp_path):
    r = cli("partition", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "train-images-idx3-ubyte" in r.stderr and str(tmp_path) in r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_real_device_failures_compression_and_per_client_accuracy(tmp_path, mnist):
    r = cli("run", "--clients", "20", "--fraction", "0.5", "--rounds", "2", "--no-progress",
            "--partition", "shards", "--dropout", "0.3", "--stragglers", "0.5",
            "--straggler-mode", "partial", "--compression", "topk", "--compression-fraction",
            "0.05", "--local-test-fraction", "0.2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "dropped out" in r.stdout and "mode partial" in r.stdout
    assert "79,688 bytes per client instead of 796,840" in r.stdout
    assert "per-client accuracy: mean" in r.stdout
    h = History.load(tmp_path / "history.json")
    assert h.config["compression_params"] == {"fraction": 0.05}
    assert h.client_accuracy.shape == (2, 20) and sum(len(x.dropped) for x in h.records) > 0
    for args, needle in [(("--compression", "quantize", "--compression-fraction", "0.1"),
                          "--compression-fraction does not apply to --compression quantize"),
                         (("--dropout", "1.2"), "dropout must be a number in [0, 1)"),
                         (("--straggler-work", "0.5", "0.2"), "straggler_work")]:
        r = cli("run", "--rounds", "1", *args)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
