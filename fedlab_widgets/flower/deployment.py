"""A local Flower Deployment Engine: a SuperLink and SuperNodes as real processes, and run_flower."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import run_parameter
from ..history import History, RoundRecord
from ..params import Param
from .export import check_exportable, export_app
from .version import FLOWER_VERSION, MAX_SUPERNODES, require_flower

__all__ = ["LocalDeployment", "run_flower", "processes_with", "free_port", "wait_for_port", "log_tail",
           "stop_processes", "flower_env"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode}:\n{log_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the {what} did not open port {port} within {timeout:.0f} s:\n{log_tail(log)}")


def log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def processes_with(env_entry: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``env_entry`` (Linux /proc)."""
    needle = env_entry.encode() + b"\0"
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes() + b"\0" and \
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(d.name))
        except (OSError, IndexError):
            continue
    return found


def flower_env(home) -> dict:
    """The environment of Flower processes started by the kit: their own ``FLWR_HOME``
    (which also tags them, for :func:`stop_processes`), no telemetry, update check or colour
    codes (a Jupyter kernel's ``FORCE_COLOR`` would colour the CLI's JSON), and this
    interpreter's scripts first on PATH (Flower starts flower-superexec etc. by name)."""
    plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**plain, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def stop_processes(procs, env_entry: str) -> None:
    """Stop ``procs`` (each the leader of its own session) and their whole process groups:
    TERM, then KILL after 10 s; then whatever is left with ``env_entry`` in its
    environment (SuperNodes start their SuperExec in a session of its own)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:   # the group: ClientApp/ServerApp children may outlive their parent
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = processes_with(env_entry)
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        t0 = time.monotonic()
        while left and time.monotonic() - t0 < 5:
            time.sleep(0.1)
            left = processes_with(env_entry)
        if not left:
            break


class LocalDeployment:
    """A SuperLink and ``num_supernodes`` SuperNodes on this machine, as real processes.

    Insecure mode on the loopback interface, telemetry and update checks off, no
    runtime dependency installation. Use as a context manager: every process (and
    the ClientApp and ServerApp processes they start) is stopped on exit, also on
    an error or Ctrl-C. ``run(app)`` submits an app with ``flwr run`` and waits
    for it to finish.
    """

    def __init__(self, num_supernodes: int, *, workdir=None, startup_timeout: float = 60.0):
        require_flower()
        self.num_supernodes = num_supernodes
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fedlab-flower-") if workdir is None else workdir)
        self.startup_timeout = startup_timeout
        self.procs: list[subprocess.Popen] = []
        self.services: list[tuple[str, subprocess.Popen]] = []   # what must stay up during a run
        self.port = free_port()
        self.env = flower_env(self.workdir / "flwr-home")
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "kit"\n\n[superlink.kit]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        exe = Path(sys.executable).parent / args[0]
        # its own session: stopping the group stops the ClientApp/ServerApp processes too
        out = log.open("w")
        proc = subprocess.Popen([str(exe) if exe.exists() else args[0], *args[1:]],
                                stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.workdir, start_new_session=True)
        out.close()  # the child has its own copy
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start(self) -> "LocalDeployment":
        link = self._spawn("superlink", ["flower-superlink", "--insecure", "--port", str(self.port),
                                         "--disable-runtime-dependency-installation"])
        wait_for_port(self.port, link, link.log, "SuperLink", self.startup_timeout)
        self.services.append(("the SuperLink", link))
        for k in range(self.num_supernodes):
            port = free_port()
            node = self._spawn(f"supernode-{k}", [
                "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(port), "--node-config",
                f"partition-id={k} num-partitions={self.num_supernodes}"])
            wait_for_port(port, node, node.log, f"SuperNode {k}", self.startup_timeout)
            self.services.append((f"SuperNode {k} (client {k})", node))
        return self

    def run(self, app, *, timeout: float = 600.0) -> str:
        """``flwr run app`` on this deployment; returns its output (RuntimeError on failure).

        A SuperNode (a client) or the SuperLink that dies during the run ends it at once
        with an error naming it: Flower's server would otherwise wait for the lost
        client's reply until its own time-out.
        """
        proc = self._spawn("flwr-run", ["flwr", "run", str(Path(app).resolve()), "kit", "--stream"])
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            lost = [(name, p) for name, p in self.services if p.poll() is not None]
            if lost:
                name, p = lost[0]
                raise RuntimeError(f"the Flower run lost {name} (exit code {p.returncode}) "
                                   f"during the run; its log ends with:\n{log_tail(p.log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Flower run did not finish within {timeout:.0f} s:\n"
                                   f"{log_tail(proc.log)}")
            time.sleep(0.2)
        out = proc.log.read_text(errors="replace")
        if proc.returncode != 0 or "Traceback" in out:
            raise RuntimeError(f"the Flower run failed (exit code {proc.returncode}):\n"
                               f"{log_tail(proc.log, 25)}")
        return out

    def stop(self) -> None:
        """Stop every process group started here: TERM, then KILL after 10 s."""
        stop_processes(self.procs, f"FLWR_HOME={self.env['FLWR_HOME']}")
        self.procs.clear()
        self.services.clear()

    def __enter__(self) -> "LocalDeployment":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir and not exc[0]:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run_flower(sim, rounds: int, *, mode: str = "deployment", num_supernodes: int | None = None,
               timeout: float = 600.0, workdir=None) -> History:
    """Run ``sim``'s experiment on a local Flower deployment and return its History.

    Parameters
    ----------
    sim : Simulation
        The experiment (its settings, not its current weights: Flower starts from
        the seed's initial model, as a fresh simulation does).
    rounds : int
    mode : {"deployment"}
        The Deployment Engine: one SuperLink and one SuperNode per client as real
        processes on the loopback interface (no Ray). Flower's simulation runtime
        needs Ray, which often fails to start on a busy 2-core machine, so it is
        not offered here.
    num_supernodes : int, optional
        Must equal ``sim.num_clients`` (one SuperNode is one client), at most 32.
    timeout : float, default 600
        Seconds for the whole run.
    workdir : path, optional
        Where the app, the logs and the results go (default: a temporary folder,
        removed after a successful run and kept, with its logs, after a failure).

    Returns
    -------
    History
        Accuracy and loss of the global model after each round (evaluated on the
        server), the clients that took part, their mean training loss, bytes and
        wall-clock seconds per round; ``config["runtime"]`` says it came from Flower.
    """

    require_flower()
    if mode != "deployment":
        raise ValueError(f"mode must be 'deployment' (Flower's simulation runtime needs Ray, which "
                         f"often fails to start on a busy 2-core machine); got {mode!r}")
    rounds = run_parameter("rounds").check(rounds)
    timeout = Param("timeout", 600.0, lo=0.0, lo_open=True,
                    doc="seconds the whole run may take").check(timeout)
    check_exportable(sim)
    n = sim.num_clients if num_supernodes is None else num_supernodes
    if n != sim.num_clients or not 1 <= n <= MAX_SUPERNODES:
        raise ValueError(f"num_supernodes must equal the simulation's number of clients "
                         f"({sim.num_clients}): each SuperNode is one client; and at most "
                         f"{MAX_SUPERNODES} on one machine; got {n}")
    dep = LocalDeployment(n, workdir=workdir)
    results = dep.workdir / "results.json"
    app = export_app(sim, dep.workdir / "app", rounds=rounds, overwrite=True,
                     results_path=str(results))
    t0 = time.perf_counter()
    with dep:
        started = time.perf_counter() - t0
        out = dep.run(app, timeout=timeout)
        try:
            data = json.loads(results.read_text())
            assert len(data["records"]) == rounds
        except (OSError, ValueError, KeyError, AssertionError):
            raise RuntimeError(f"the Flower run ended without {rounds} evaluated rounds; its "
                               f"output ends with:\n{out[-3000:]}") from None
    timing = [{k: r.get(k) for k in ("round", "seconds", "eval_seconds", "client_seconds",
                                      "setup_seconds", "process_seconds")} for r in data["records"]]
    h = History(config={**sim.config(), "runtime": "flower-deployment",
                        "flower_version": FLOWER_VERSION, "flower_strategy": data["strategy"],
                        "startup_seconds": started, "flower_timing": timing},
                label=f"Flower deployment: {sim.default_label()}")
    down, up = sim.algorithm.bytes_per_client(sim.num_parameters, sim.clients_per_round)
    for r in data["records"]:
        clients = r.get("clients", [])
        w = np.array(r.get("weight", []), dtype=float)
        loss = float((w * np.array(r.get("client_loss", []))).sum() / w.sum()) if len(w) else math.nan
        h.records.append(RoundRecord(
            round=int(r["round"]), accuracy=float(r["accuracy"]), loss=float(r["loss"]),
            train_loss=loss, clients=clients, bytes_down=down * len(clients),
            bytes_up=up * len(clients), seconds=float(r["seconds"]),
            samples=int(w.sum()) * sim.local_epochs, reported=len(clients),
            note=f"{r.get('failures', 0)} failures" if r.get("failures") else ""))
    return h
