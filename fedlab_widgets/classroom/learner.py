"""The learner's side: join the instructor's federation from this laptop.

:func:`join` fetches the classroom's CA certificate and pins it by the fingerprint on
the join card, checks the kit's version, makes this laptop's key pair, registers
it with the class code, and starts a Flower SuperNode (TLS, authenticated) that
trains on this seat's data. The returned :class:`Seat` shows what happened: connected,
the rounds taken part in, the bytes that left the laptop, the accuracy of the model
this laptop trained against the global model's. When the instructor ends the class,
the SuperNode stops by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..flower.deployment import flower_env, free_port, log_tail, processes_with, stop_processes
from .app import read_json
from .keys import code_proof, fingerprint as ca_fingerprint, make_node_key
from .service import kit_version

__all__ = ["join", "Seat", "ClassroomError"]


class ClassroomError(RuntimeError):
    """Joining failed: the message says why (unreachable, certificate, code, version, seat)."""


def _split(address: str) -> tuple[str, int]:
    host, sep, port = str(address).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) < 65535:
        raise ValueError(f"address must be HOST:PORT as on the join card (e.g. 192.168.1.20:9092); "
                         f"got {address!r}")
    return host.strip("[]"), int(port)


def _http(url: str, body: dict | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def join(address: str, *, code: str, seat: int, fingerprint: str | None = None,
         workdir=None, patience: float = 20.0) -> "Seat":
    """Join the class at ``address`` (``HOST:PORT`` from the join card) as ``seat``.

    Parameters
    ----------
    address : str
        The SuperLink's address; the join desk is at the next port.
    code : str
        The class code on the join card.
    seat : int
        This laptop's seat (0 to seats - 1): which writers' digits it trains on.
    fingerprint : str, optional
        The CA fingerprint on the join card. Given, a server whose certificate
        differs is refused before anything is sent to it.
    patience : float, default 20
        Seconds the instructor's server may be unreachable before this seat leaves.

    Raises
    ------
    ClassroomError
        Unreachable address, certificate mismatch, wrong code, another kit version,
        a seat out of range or taken; the message says which and what to do.

    Examples
    --------
    >>> me = join("192.168.1.20:9092", code="K7Q2XM", seat=3)   # doctest: +SKIP
    >>> me.widget()                                             # doctest: +SKIP
    """
    host, port = _split(address)
    if not isinstance(seat, int) or isinstance(seat, bool) or seat < 0:
        raise ValueError(f"seat must be a non-negative integer (the card gives the range); got {seat!r}")
    desk = f"http://{host}:{port + 1}"
    try:
        _, raw = _http(f"{desk}/card", timeout=5)
        card = json.loads(raw)
        _, ca = _http(f"{desk}/ca.pem", timeout=5)
    except (OSError, ValueError) as e:
        raise ClassroomError(f"cannot reach the instructor's join desk at {desk} ({e}); check the "
                             f"address on the join card and that this laptop is on the room's "
                             f"network") from None
    got = ca_fingerprint(ca)
    if fingerprint is not None and got.replace(":", "").upper() != \
            str(fingerprint).replace(":", "").strip().upper():
        raise ClassroomError(f"certificate mismatch: the server at {address} presents a CA with "
                             f"fingerprint {got}, not the join card's {fingerprint}; do not join "
                             f"(another machine may be answering at that address)")
    if card.get("kit") != kit_version():
        raise ClassroomError(f"the kit's version differs: the instructor has fedlab-widgets "
                             f"{card.get('kit')}, this laptop {kit_version()}; install the "
                             f"instructor's version")
    if not seat < card["seats"]:
        raise ClassroomError(f"seat must be from 0 to {card['seats'] - 1} in this class; got {seat}")
    folder = Path(tempfile.mkdtemp(prefix=f"fedlab-seat-{seat}-") if workdir is None else workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(ca)
    keys = make_node_key(folder)
    public = keys["public"].read_text()
    status, raw = _http(f"{desk}/register", {"seat": seat, "public_key": public, "kit": kit_version(),
                                             "proof": code_proof(code, public.encode())}, timeout=90)
    if status != 200:
        raise ClassroomError(json.loads(raw).get("error", raw.decode(errors="replace")))
    me = Seat(seat, host, port, folder, keys["private"], patience=patience)
    return me.start()


# Runs the SuperNode as its child and stops it when the learner's Python process (the kernel
# that called join) is gone, even killed without a chance to leave: no SuperNode outlives it.
_GUARD = """
import os, signal, subprocess, sys, time
parent, node = int(sys.argv[1]), subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: (node.terminate(), sys.exit(0)))
while node.poll() is None:
    if os.getppid() != parent:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
        break
    time.sleep(1)
sys.exit(node.returncode or 0)
"""


class Seat:
    """This laptop's place in the class: its SuperNode, its status, its leaving."""

    def __init__(self, seat: int, host: str, port: int, folder: Path, key: Path, *, patience: float):
        self.seat, self.host, self.port, self.folder, self.key = seat, host, port, folder, key
        self.patience = patience
        self.status_file = folder / "status.json"
        self.env = flower_env(folder / "flwr-home")
        self.procs: list[subprocess.Popen] = []
        self.reason = ""
        self.ended = threading.Event()

    def start(self) -> "Seat":
        (self.folder / "flwr-home").mkdir(exist_ok=True)
        exe = Path(sys.executable).parent / "flower-supernode"
        self.log = self.folder / "supernode.log"
        with self.log.open("w") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", _GUARD, str(os.getpid()),
                 str(exe) if exe.exists() else "flower-supernode",
                 "--root-certificates", str(self.folder / "ca.pem"),
                 "--superlink", f"{self.host}:{self.port}",
                 "--auth-supernode-private-key", str(self.key), "--port", str(free_port()),
                 "--node-config", f'seat={self.seat} status-file="{self.status_file}"'],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder,
                start_new_session=True))
        threading.Thread(target=self._watch, name=f"seat-{self.seat}-watch", daemon=True).start()
        return self

    def _watch(self) -> None:
        """Leave when the class ends, the server is gone for ``patience`` s, or the node dies."""
        lost = None
        while not self.ended.is_set():
            if self.procs and self.procs[0].poll() is not None:
                self._leave(f"this laptop's SuperNode stopped (exit code "
                            f"{self.procs[0].returncode}): {log_tail(self.log, 4)}")
                return
            try:
                _, raw = _http(f"http://{self.host}:{self.port + 1}/state", timeout=3)
                lost = None
                if json.loads(raw).get("state") == "ended":
                    self._leave("the instructor ended the class")
                    return
            except (OSError, ValueError):
                lost = lost or time.monotonic()
                if time.monotonic() - lost > self.patience:
                    self._leave(f"the instructor's server has been unreachable for "
                                f"{self.patience:.0f} s")
                    return
            self.ended.wait(1.0)

    def _leave(self, reason: str) -> None:
        self.reason = reason
        stop_processes(self.procs, f"FLWR_HOME={self.env['FLWR_HOME']}")
        self.procs.clear()
        try:
            _http(f"http://{self.host}:{self.port + 1}/bye", {"seat": self.seat}, timeout=3)
        except OSError:
            pass
        self.ended.set()

    def leave(self) -> None:
        """Leave the class now (the SuperNode and its processes stop)."""
        if not self.ended.is_set():
            self._leave("you left the class")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this seat has left (the class ended); True if it has."""
        return self.ended.wait(timeout)

    def wait_for_rounds(self, n: int, *, timeout: float = 3600.0) -> dict:
        """Block until this seat has taken part in ``n`` rounds; returns :meth:`status`.

        Raises :class:`ClassroomError` if the seat leaves first (the class ended, the
        server is gone), :class:`TimeoutError` after ``timeout`` seconds.
        """
        t0 = time.monotonic()
        while len((s := self.status())["rounds"]) < n:
            if self.ended.is_set():
                raise ClassroomError(f"seat {self.seat} left after {len(s['rounds'])} of {n} "
                                     f"rounds: {self.reason}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"seat {self.seat} took part in {len(s['rounds'])} of {n} "
                                   f"rounds within {timeout:.0f} s")
            time.sleep(0.3)
        return s

    def status(self) -> dict:
        """Connected, the rounds taken part in, bytes up and down, accuracies (test set)."""
        s = read_json(self.status_file, {})
        return {"seat": self.seat, "connected": bool(s.get("connected")) and not self.ended.is_set(),
                "rounds": s.get("rounds", []), "skipped": s.get("skipped", []),
                "bytes_up": s.get("bytes_up", 0), "bytes_down": s.get("bytes_down", 0),
                "global_accuracy": s.get("global_accuracy"), "own_accuracy": s.get("own_accuracy"),
                "role": s.get("role", "honest"), "received": s.get("received"),
                "history": s.get("history", []), "left": self.reason}

    def processes(self) -> list[int]:
        return processes_with(f"FLWR_HOME={self.env['FLWR_HOME']}")

    def widget(self, *, refresh: float = 1.0):
        from .seat_view import SeatView
        return SeatView(self, refresh=refresh)

    def __repr__(self) -> str:
        s = self.status()
        return (f"Seat({self.seat}, connected={s['connected']}, rounds={len(s['rounds'])}, "
                f"bytes_up={s['bytes_up']})")
