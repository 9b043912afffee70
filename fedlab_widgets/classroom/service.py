"""The join desk: a small HTTP service beside the SuperLink that lets a learner in.

It hands out the classroom's CA certificate (which the learner pins by the
fingerprint on the join card), checks the learner's proof of the class code
(an HMAC over their public key: the code itself never crosses the network),
registers the learner's SuperNode key with the SuperLink (Flower's CLI-managed
SuperNode authentication) and tells learners when the class has ended. It holds
no model and no update: those travel only over Flower's TLS connection.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .keys import code_proof

__all__ = ["JoinDesk", "kit_version"]


def kit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fedlab-widgets")
    except PackageNotFoundError:   # pragma: no cover - run from a source tree
        return "unknown"


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A laptop that gave up waiting (a slow reply under load) is no error to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class JoinDesk:
    """The service's state and its HTTP server (started by :meth:`start`, in a thread).

    ``register(seat, public_key)`` is the instructor's hook that registers a key with
    the SuperLink and returns its node id.
    """

    def __init__(self, *, host: str, port: int, code: str, seats: int, card: dict, ca_pem: bytes,
                 register):
        self.code, self.seats, self.card, self.ca_pem = code, seats, card, ca_pem
        self.register_key = register
        self.taken: dict[int, dict] = {}     # seat -> {"key", "node_id"}
        self.left: set[int] = set()
        self.refused: list[dict] = []        # what was refused, and why (the projector shows it)
        self.state = "open"
        self.lock = threading.Lock()
        desk = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):      # quiet: the projector shows what matters
                pass

            def _send(self, code: int, body, kind="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/card":
                    return self._send(200, {**desk.card, "state": desk.state})
                if self.path == "/ca.pem":
                    return self._send(200, desk.ca_pem, "application/x-pem-file")
                if self.path == "/state":
                    return self._send(200, {"state": desk.state})
                return self._send(404, {"error": f"no such page: {self.path}"})

            def do_POST(self):
                try:
                    n = int(self.headers.get("Content-Length", 0))
                    body = json.loads(self.rfile.read(min(n, 65536)) or b"{}")
                except ValueError:
                    return self._send(400, {"error": "the request was not JSON"})
                if self.path == "/register":
                    return self._send(*desk.handle_register(body, self.client_address[0]))
                if self.path == "/bye":
                    with desk.lock:
                        desk.left.add(int(body.get("seat", -1)))
                    return self._send(200, {"ok": True})
                return self._send(404, {"error": f"no such page: {self.path}"})

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="classroom-join-desk",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> "JoinDesk":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refuse(self, code: int, why: str, who: str, seat) -> tuple[int, dict]:
        with self.lock:
            self.refused.append({"from": who, "seat": seat, "why": why})
        return code, {"error": why}

    def handle_register(self, body: dict, who: str) -> tuple[int, dict]:
        if self.state != "open":
            return self.refuse(403, "the class has ended", who, body.get("seat"))
        if body.get("kit") != self.card["kit"]:
            return self.refuse(409, f"the kit's version differs: the instructor has fedlab-widgets "
                                    f"{self.card['kit']}, this laptop {body.get('kit')}; install "
                                    f"the instructor's version", who, body.get("seat"))
        seat, key = body.get("seat"), str(body.get("public_key", ""))
        if not isinstance(seat, int) or isinstance(seat, bool) or not 0 <= seat < self.seats:
            return self.refuse(400, f"seat must be an integer from 0 to {self.seats - 1}; got "
                                    f"{seat!r}", who, seat)
        if not hmac.compare_digest(str(body.get("proof", "")), code_proof(self.code, key.encode())):
            return self.refuse(403, "the class code is wrong (it is on the join card)", who, seat)
        with self.lock:
            held = self.taken.get(seat)
            if held is not None and held["key"] != key and seat not in self.left:
                return 409, {"error": f"seat {seat} is taken; choose another seat"}
            try:
                node_id = self.register_key(seat, key)
            except RuntimeError as e:
                return 500, {"error": f"the SuperLink did not register this laptop: {e}"}
            self.taken[seat] = {"key": key, "node_id": node_id}
            self.left.discard(seat)
        return 200, {"seat": seat, "node_id": node_id}
