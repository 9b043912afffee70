"""A running classroom federation: its processes, its seats and roles, its rounds."""

from __future__ import annotations

import atexit
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..flower.deployment import flower_env, log_tail, processes_with, stop_processes, wait_for_port
from ..flower.version import FLOWER_VERSION
from ..history import History, RoundRecord
from .app import read_json, write_json
from .keys import make_certificates, room_addresses
from .roles import check_role
from .service import JoinDesk, kit_version

__all__ = ["Classroom", "JoinCard"]

PER_SEAT = ("received", "weight", "train_seconds", "own_accuracy", "norm", "cosine", "roles")


class JoinCard:
    """What the projector shows learners: the address, the code, the CA fingerprint, one line."""

    def __init__(self, address: str, code: str, fingerprint_: str, seats: int):
        self.address, self.code, self.fingerprint, self.seats = address, code, fingerprint_, seats

    @property
    def line(self) -> str:
        return (f'from fedlab_widgets.classroom import join; me = join("{self.address}", '
                f'code="{self.code}", seat=SEAT, fingerprint="{self.fingerprint}")')

    def __repr__(self) -> str:
        return (f"Join the class at {self.address} with code {self.code} (seats 0-{self.seats - 1})\n"
                f"CA fingerprint (SHA-256): {self.fingerprint}\n{self.line}\n"
                f"or: python -m fedlab_widgets classroom join {self.address} --code {self.code} "
                f"--seat SEAT --fingerprint {self.fingerprint}")

    def _repr_html_(self) -> str:
        fp = self.fingerprint
        return (f"<div style='border:3px solid #1f77b4;border-radius:8px;padding:12px;"
                f"font-family:sans-serif;max-width:900px'><div style='font-size:28px'>Join the "
                f"class at <b>{self.address}</b> &nbsp; code <b style='letter-spacing:3px'>"
                f"{self.code}</b></div><div style='font-size:15px;margin-top:6px'>seats 0 to "
                f"{self.seats - 1} &middot; CA fingerprint (SHA-256) <code>{fp[:23]}&hellip;"
                f"{fp[-11:]}</code></div><pre style='font-size:13px;white-space:pre-wrap;"
                f"background:#f4f4f4;padding:6px'>{self.line}</pre></div>")


class Classroom:
    """The instructor's running federation (made by :func:`~fedlab_widgets.classroom.serve`).

    ``assign(seat, role, **params)`` sets a seat's role for the next rounds;
    ``run_rounds(n)`` runs ``n`` rounds on the seats online and returns their records;
    ``history`` is a :class:`~fedlab_widgets.History`; ``stop()`` ends the class:
    learners' SuperNodes leave, then every process started here is stopped.
    """

    def __init__(self, write_app, *, seats, port, host, code, experiment, round_timeout,
                 addresses=None, workdir=None):
        self.seats, self.port, self.host, self.code = seats, port, host, code
        self.experiment, self.round_timeout = experiment, round_timeout
        self._write_app = write_app
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fedlab-classroom-") if workdir is None
                            else workdir)
        self.control = self.workdir / "control"
        self.addresses = list(addresses) if addresses else room_addresses()
        self.procs: list[subprocess.Popen] = []
        self.roles: dict[int, dict] = {}
        self.algorithm, self.aggregator = "fedavg", "mean"
        self.desk: JoinDesk | None = None
        self._sent = 0
        self.env = flower_env(self.workdir / "flwr-home")

    # -- starting ---------------------------------------------------------------------------
    def simulation(self):
        """The same experiment as a :class:`~fedlab_widgets.Simulation`: every seat a client,
        full participation (what the room's curve equals when every seat is honest)."""
        from ..datasets import load_mnist
        from ..partition import partition
        from ..simulation import Simulation
        e = self.experiment
        train, test = load_mnist()
        parts = partition(train, e["scheme"], self.seats, seed=e["seed"])
        return Simulation(e["model"], train, test, parts, client_fraction=1.0,
                          local_epochs=e["local_epochs"], batch_size=e["batch_size"], lr=e["lr"],
                          seed=e["seed"])

    def _spawn(self, name: str, args: list) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        exe = Path(sys.executable).parent / args[0]
        with log.open("w") as out:
            proc = subprocess.Popen([str(exe) if exe.exists() else args[0], *map(str, args[1:])],
                                    stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.workdir, start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start(self) -> "Classroom":
        atexit.register(self.stop)    # a kernel that shuts down ends the class with it
        self.control.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        tls = make_certificates(self.workdir / "tls", hosts=[*self.addresses, "localhost"])
        self.ca_pem = Path(tls["ca"]).read_bytes()
        self.fingerprint = tls["fingerprint"]
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "room"\n\n[superlink.room]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{tls["ca"]}"\n')
        link = self._spawn("superlink", [
            "flower-superlink", "--ssl-ca-certfile", tls["ca"], "--ssl-certfile", tls["cert"],
            "--ssl-keyfile", tls["key"], "--enable-supernode-auth", "--host", self.host,
            "--port", self.port, "--disable-runtime-dependency-installation"])
        wait_for_port(self.port, link, link.log, "SuperLink", 60)
        self.desk = JoinDesk(host=self.host, port=self.port + 1, code=self.code, seats=self.seats,
                             ca_pem=self.ca_pem, register=self._register,
                             card={"kit": kit_version(), "flower": FLOWER_VERSION,
                                   "seats": self.seats, "port": self.port,
                                   "fingerprint": self.fingerprint}).start()
        app = self._write_app(self.workdir / "app", self.simulation(), self.control)
        self.server = self._spawn("flwr-run", ["flwr", "run", app, "room", "--stream"])
        t0 = time.monotonic()
        while read_json(self.control / "state.json") is None:
            if self.server.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"the classroom's ServerApp did not start:\n"
                                   f"{log_tail(self.server.log, 25)}")
            time.sleep(0.3)
        return self

    def _register(self, seat: int, public_key: str) -> int:
        """Register a learner's key with the SuperLink (Flower's CLI-managed node auth)."""
        held = self.desk.taken.get(seat) if self.desk else None
        if held is not None and held["key"] == public_key:
            return held["node_id"]
        if held is not None:     # the seat's learner came back with a new key
            subprocess.run(["flwr", "supernode", "unregister", str(held["node_id"]), "room"],
                           env=self.env, capture_output=True, timeout=60)
        key = self.control / f"seat-{seat}-{time.time_ns()}.pub"
        key.write_text(public_key)
        r = subprocess.run(["flwr", "supernode", "register", str(key), "room", "--name",
                            f"seat-{seat}", "--format", "json"], env=self.env,
                           capture_output=True, text=True, timeout=60)
        try:   # plain JSON: flower_env keeps a kernel's FORCE_COLOR out of Flower's CLI
            node_id = int(json.loads(r.stdout)["node-id"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError((r.stdout + r.stderr).strip()[-500:]) from None
        registry = read_json(self.control / "registry.json", {})
        registry[str(seat)] = node_id
        write_json(self.control / "registry.json", registry)
        return node_id

    # -- what the projector reads --------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.addresses[0]}:{self.port}"

    def card(self, address: str | None = None) -> JoinCard:
        return JoinCard(address or self.address, self.code, self.fingerprint, self.seats)

    def state(self) -> dict:
        return read_json(self.control / "state.json", {})

    @property
    def online(self) -> list[int]:
        return self.state().get("online", [])

    @property
    def records(self) -> list[dict]:
        """One dict per round played; per-seat entries are keyed by the seat number."""
        return [{k: ({int(s): x for s, x in v.items()} if k in PER_SEAT else v) for k, v in r.items()}
                for r in self.state().get("records", [])]

    @property
    def refused(self) -> list[dict]:
        return list(self.desk.refused) if self.desk else []

    def wait_for_seats(self, n: int | None = None, *, timeout: float = 120.0) -> list[int]:
        """Wait until ``n`` seats (default: all) are online; returns the seats online."""
        n = self.seats if n is None else n
        t0 = time.monotonic()
        while len(self.online) < n:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{len(self.online)} of {n} seats online after {timeout:.0f} s "
                                   f"(online: {self.online}; refused: {self.refused})")
            self._check_alive()
            time.sleep(0.3)
        return self.online

    def _check_alive(self) -> None:
        if self.server.poll() is not None or self.state().get("status", "").startswith("failed"):
            raise RuntimeError(f"the classroom's server stopped: {self.state().get('status')}\n"
                               f"{log_tail(self.server.log, 25)}")

    # -- what the instructor does --------------------------------------------------------------
    def assign(self, seat: int, role: str = "honest", **params) -> dict:
        """Give ``seat`` a role for the next rounds (see :mod:`fedlab_widgets.classroom.roles`)."""
        if not isinstance(seat, int) or isinstance(seat, bool) or not 0 <= seat < self.seats:
            raise ValueError(f"seat must be an integer from 0 to {self.seats - 1}; got {seat!r}")
        r = check_role(role, params)
        if r["role"] == "honest":
            self.roles.pop(seat, None)
        else:
            self.roles[seat] = r
        return r

    def use(self, algorithm: str = "fedavg", aggregator: str = "mean") -> None:
        """The algorithm and aggregator of the next rounds (checked as ``algorithms.get`` does)."""
        from .. import algorithms
        algorithms.get(algorithm, **({} if aggregator == "mean" else {"aggregator": aggregator}))
        self.algorithm, self.aggregator = algorithm, aggregator

    def run_rounds(self, n: int = 1, *, wait: bool = True, timeout: float | None = None) -> list[dict]:
        """Run ``n`` rounds on the seats online, with the current roles and algorithm."""
        from ..config import run_parameter
        n = run_parameter("rounds").check(n)
        before = len(self.records)
        self._send({"do": "rounds", "rounds": n, "roles": {str(k): v for k, v in self.roles.items()},
                    "algorithm": self.algorithm, "aggregator": self.aggregator,
                    "timeout": self.round_timeout})
        if not wait:
            return []
        self.wait(timeout=timeout if timeout is not None else n * (self.round_timeout + 60))
        return self.records[before:]

    def _send(self, cmd: dict) -> None:
        self._sent += 1
        write_json(self.control / f"cmd-{self._sent:05d}.json", cmd)

    def wait(self, *, timeout: float = 600.0) -> None:
        """Wait until the server has carried out every command sent."""
        t0 = time.monotonic()
        while self.state().get("done", 0) < self._sent:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the rounds did not finish within {timeout:.0f} s")
            self._check_alive()
            time.sleep(0.2)

    @property
    def history(self) -> History:
        h = History(config={"runtime": "classroom", "seats": self.seats, **self.experiment},
                    label=f"classroom of {self.seats} seats")
        for r in self.records:
            w = r.get("weight", {})
            h.records.append(RoundRecord(
                round=r["round"], accuracy=r["accuracy"], loss=r["loss"],
                train_loss=r.get("train_loss", math.nan), clients=[int(s) for s in r["reported"]],
                bytes_down=0, bytes_up=0, seconds=r["seconds"],
                samples=int(sum(w.values())) * self.experiment["local_epochs"],
                reported=len(r["reported"]), dropped=r["failed"] + r["late"]))
        return h

    def reveal(self) -> dict[int, str]:
        """Who had which role in the rounds played (seat -> roles), for the room's guesses."""
        out: dict[int, set] = {}
        for r in self.records:
            for s, role in r.get("roles", {}).items():
                out.setdefault(int(s), set()).add(role["role"])
        return {s: ", ".join(sorted(v)) for s, v in sorted(out.items())}

    # -- stopping ---------------------------------------------------------------------------
    def stop(self, *, grace: float = 15.0) -> None:
        """End the class: the learners' laptops are told and leave, then every process
        started here stops (the SuperLink, the ServerApp, their children)."""
        if self.desk is not None:
            self.desk.state = "ended"
            if getattr(self, "server", None) is not None and self.server.poll() is None:
                self._send({"do": "end"})
            t0 = time.monotonic()
            while set(self.desk.taken) - self.desk.left and time.monotonic() - t0 < grace:
                time.sleep(0.2)
        atexit.unregister(self.stop)
        stop_processes(self.procs, f"FLWR_HOME={self.env['FLWR_HOME']}")
        self.procs.clear()
        for p in getattr(self, "learners", []):   # learners started here leave by themselves
            try:
                p.wait(max(1.0, grace))
            except subprocess.TimeoutExpired:
                stop_processes([p], f"FEDLAB_NONE={p.pid}")
        if self.desk is not None:
            self.desk.close()
            self.desk = None

    def processes(self) -> list[int]:
        return processes_with(f"FLWR_HOME={self.env['FLWR_HOME']}")

    def __enter__(self) -> "Classroom":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir and not exc[0]:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Classroom({self.address}, seats={self.seats}, online={self.online})"
