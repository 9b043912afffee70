"""The classroom's Flower App: a seat's ClientApp and the instructor's ServerApp.

The ServerApp is long-lived: it waits for the instructor's commands (a folder of
numbered JSON files the projector writes), runs the rounds asked for on the seats
online, with each seat's role, and writes what happened (``state.json``) for the
projector to draw. A round sends each seat the global model and nothing else, waits
for the replies until ``round_timeout`` (or until every missing seat is offline),
and goes on with who reported: the server half is the simulation's own
(:func:`fedlab_widgets.round.server_half`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from .. import algorithms, attacks
from ..engines import LocalRule
from ..engines.base import ClientUpdates
from ..evaluation import evaluate
from ..flower import simulation_of
from ..round import round_context, server_half
from ..threads import torch_threads
from .roles import apply_role_update

__all__ = ["seat_train", "classroom_main", "model_hash", "write_json", "read_json"]


def model_hash(x: torch.Tensor) -> str:
    """A short SHA-256 of a flat model's float32 bytes (what a seat received, what it sent)."""
    return hashlib.sha256(x.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


def write_json(path, data) -> None:
    """Write ``data`` to ``path`` atomically (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


# -- a seat (the learner's laptop) ---------------------------------------------------------------
def _seat_status(context) -> tuple[Path | None, dict]:
    path = context.node_config.get("status-file")
    path = Path(path) if path else None
    return path, (read_json(path, {}) if path else {})


def seat_train(msg, context):
    """A seat's train step: the kit's local training on its writers, with its role."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    t0 = time.time()
    sim = simulation_of(context.run_config)
    seat = int(context.node_config["seat"])
    conf = msg.content["config"]
    r, role = int(conf["server-round"]), json.loads(conf["role"])
    model = sim.global_model
    arrays = msg.content["arrays"]
    model.load_state_dict(arrays.to_torch_state_dict())
    path, status = _seat_status(context)
    status.update(seat=seat, connected=True, role=role["role"], round=r,
                  bytes_down=status.get("bytes_down", 0) + arrays.count_bytes())
    path and write_json(path, status)      # the learner sees "round r" while it trains
    if role["role"] == "dropout":
        status.setdefault("skipped", []).append(r)
        path and write_json(path, status)
        from flwr.app import Error
        return Message(Error(code=0, reason=f"seat {seat} dropped out of round {r} (its role)"),
                       reply_to=msg)
    with torch_threads(1), torch.no_grad():
        x = sim.layout.flatten(model.parameters()).clone()
        rule = LocalRule()
        if role["role"] == "backdoor":
            atk = attacks.get("backdoor", target=role["target"], share=role["share"])
            rule = atk.local_rule(rule, [seat], frozenset({seat}), sim.train)
        u = sim.engine.train_clients(x, sim.make_schedule(r, [seat]), lr=sim.lr, rule=rule)
        own = x + u.delta[0]
        sent = x + apply_role_update(role, u.delta[0].clone(), seed=sim.seed, round_=r, seat=seat)
        t1 = time.time()
        global_acc, _ = evaluate(model, sim.test)
        torch._foreach_copy_(list(model.parameters()), sim.layout.views(own))
        own_acc, _ = evaluate(model, sim.test)
        torch._foreach_copy_(list(model.parameters()), sim.layout.views(sent))
    if role["role"] == "straggler":
        time.sleep(role["delay"])
    reply = ArrayRecord(model.state_dict())
    status.update(bytes_up=status.get("bytes_up", 0) + reply.count_bytes(),
                  rounds=status.get("rounds", []) + [r], global_accuracy=global_acc,
                  own_accuracy=own_acc, received=model_hash(x), train_loss=float(u.loss[0]))
    status.setdefault("history", []).append({"round": r, "global": global_acc, "own": own_acc})
    path and write_json(path, status)
    metrics = MetricRecord({"seat": seat, "num-examples": int(u.weight[0]), "steps": int(u.steps[0]),
                            "train-loss": float(u.loss[0]), "train-seconds": t1 - t0,
                            "own-accuracy": own_acc})
    info = ConfigRecord({"received": model_hash(x)})
    return Message(content=RecordDict({"arrays": reply, "metrics": metrics, "info": info}),
                   reply_to=msg)


# -- the instructor's server ---------------------------------------------------------------------
class Room:
    """The ServerApp's state: who is online, the global model, the records so far."""

    def __init__(self, grid, sim, control: Path):
        self.grid, self.sim, self.control = grid, sim, control
        self.records: list[dict] = []
        self.online: dict[int, int] = {}          # seat -> node id
        self.seen: set[int] = set()
        self.done = 0                               # the last command carried out
        self.status = "waiting for the instructor"
        self.x = sim.layout.flatten(sim.global_model.parameters()).clone()
        self.accuracy = evaluate(sim.global_model, sim.test)[0]

    def load(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            torch._foreach_copy_(list(self.sim.global_model.parameters()), self.sim.layout.views(x))

    def census(self) -> dict[int, int]:
        seats = {int(k): int(v) for k, v in read_json(self.control / "registry.json", {}).items()}
        node_seat = {v: k for k, v in seats.items()}
        self.online = {node_seat[n.node_id]: n.node_id for n in _patiently(self.grid.get_nodes)
                       if n.status == "online" and n.node_id in node_seat}
        self.seen |= set(self.online)
        return self.online

    def publish(self) -> None:
        write_json(self.control / "state.json", {
            "status": self.status, "done": self.done, "online": sorted(self.online),
            "seen": sorted(self.seen), "records": self.records, "initial_accuracy": self.accuracy,
            "time": time.time()})

    def next_command(self):
        path = self.control / f"cmd-{self.done + 1:05d}.json"
        return read_json(path) if path.exists() else None

    def loop(self) -> None:
        last = 0.0
        while True:
            cmd = self.next_command()
            if cmd is None:
                if time.monotonic() - last > 1.0:
                    self.census()
                    self.publish()
                    last = time.monotonic()
                time.sleep(0.2)
                continue
            if cmd["do"] == "end":
                self.done += 1
                self.status = "ended"
                self.publish()
                return
            for _ in range(int(cmd.get("rounds", 1))):
                self.play(cmd)
            self.done += 1
            self.status = "waiting for the instructor"
            self.publish()

    def exchange(self, messages, timeout: float) -> list:
        """Push the round's messages; pull replies until all are in, ``timeout`` passes, or
        every seat still missing has gone offline."""
        ids = list(self.grid.push_messages(messages))
        dst = {i: m.metadata.dst_node_id for i, m in zip(ids, messages)}
        replies, waiting = [], set(ids)
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            for m in _patiently(self.grid.pull_messages, list(waiting)):
                replies.append(m)
                waiting.discard(m.metadata.reply_to_message_id)
            if waiting:
                online = set(self.census().values())
                if not any(dst[i] in online for i in waiting):
                    break
                time.sleep(0.25)
        return replies

    def play(self, cmd: dict) -> None:
        from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
        sim, r = self.sim, len(self.records) + 1
        self.status = f"round {r}"
        self.publish()
        t0 = time.perf_counter()
        seats = self.census()
        roles = {int(k): v for k, v in cmd.get("roles", {}).items()}
        self.load(self.x)
        state = sim.global_model.state_dict()
        honest = {"role": "honest"}
        msgs = [Message(RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({
                    "server-round": r, "role": json.dumps(roles.get(s, honest))})}),
                        dst_node_id=nid, message_type="train") for s, nid in sorted(seats.items())]
        t_push = time.perf_counter()
        replies = self.exchange(msgs, float(cmd.get("timeout", 60)))
        t_in = time.perf_counter()
        ok = sorted((m for m in replies if not m.has_error()),
                    key=lambda m: int(m.content["metrics"]["seat"]))
        failed = sorted({s for s, nid in seats.items() for m in replies
                         if m.has_error() and m.metadata.src_node_id == nid})
        rec = self.aggregate(r, ok, cmd, seats, failed, t0)
        # the server's own work (building and aggregating the messages, evaluating), apart
        # from the time it waits for the seats' replies
        rec["server_seconds"] = (t_push - t0) + (time.perf_counter() - t_in)
        self.records.append(rec)

    def aggregate(self, r, ok, cmd, seats, failed, t0) -> dict:
        sim = self.sim
        met = [m.content["metrics"] for m in ok]
        reported = [int(q["seat"]) for q in met]
        rec = {"round": r, "seats": sorted(seats), "reported": reported, "failed": failed,
               "late": sorted(set(seats) - set(reported) - set(failed)),
               "algorithm": cmd.get("algorithm", "fedavg"), "aggregator": cmd.get("aggregator", "mean"),
               "roles": cmd.get("roles", {}), "sent": model_hash(self.x),
               "received": {int(m.content["metrics"]["seat"]): str(m.content["info"]["received"])
                            for m in ok},
               "weight": {int(q["seat"]): float(q["num-examples"]) for q in met},
               "train_seconds": {int(q["seat"]): float(q["train-seconds"]) for q in met},
               "own_accuracy": {int(q["seat"]): float(q["own-accuracy"]) for q in met}}
        if ok:
            rows = torch.stack([_flat(sim, m.content["arrays"]) for m in ok])
            updates = ClientUpdates(
                clients=reported, delta=rows - self.x,
                weight=torch.tensor([float(q["num-examples"]) for q in met], dtype=torch.float64),
                steps=torch.tensor([int(q["steps"]) for q in met]),
                loss=torch.tensor([float(q["train-loss"]) for q in met], dtype=torch.float64))
            alg = algorithms.get(rec["algorithm"], **_aggregator(rec["aggregator"]))
            with torch.no_grad():
                x_new = server_half(alg, updates, round_context(sim, r, self.x))
            # each seat's agreement with the room: the cosine of its update with the
            # coordinate-wise median of all updates (a reference one attacker cannot drag)
            d = updates.delta.double()
            ref = d.median(dim=0).values
            norms = d.norm(dim=1)
            cos = (d @ ref) / (norms * ref.norm() + 1e-12)
            rec.update(norm=dict(zip(reported, norms.tolist())), cosine=dict(zip(reported, cos.tolist())),
                       train_loss=float((updates.weight * updates.loss).sum() / updates.weight.sum()))
            self.x = x_new
        self.load(self.x)
        with torch_threads(sim.num_threads):
            rec["accuracy"], rec["loss"] = evaluate(sim.global_model, sim.test)
            if any(v.get("role") == "backdoor" for v in rec["roles"].values()):
                bd = next(v for v in rec["roles"].values() if v.get("role") == "backdoor")
                rec["backdoor"] = attacks.get("backdoor", target=bd["target"]).success_rate(
                    sim.global_model, sim.test)
        rec["seconds"] = time.perf_counter() - t0
        return rec


def _patiently(call, *args, tries: int = 5):
    """A call to the SuperLink that may be repeated (it changes nothing there), retried when
    it times out: a SuperLink on a laptop busy with many seats answers late, not never."""
    for k in range(tries):
        try:
            return call(*args)
        except Exception as e:   # httpx's timeouts; Flower does not wrap them
            if k == tries - 1 or not ("Timeout" in type(e).__name__ or isinstance(e, ConnectionError)):
                raise
            time.sleep(2.0 * (k + 1))


def _aggregator(name: str) -> dict:
    return {} if name == "mean" else {"aggregator": name}


def _flat(sim, arrays) -> torch.Tensor:
    sd = arrays.to_torch_state_dict()
    return torch.cat([sd[n].reshape(-1).to(torch.float32) for n in sim.layout.names])


def classroom_main(grid, context) -> None:
    """The ServerApp's main: the room's loop until the instructor ends the class."""
    cfg = context.run_config
    sim = simulation_of(cfg)
    sim.global_model.load_state_dict(sim.initial_state)
    room = Room(grid, sim, Path(cfg["control-dir"]))
    try:
        room.loop()
    except BaseException as e:   # the projector shows why the server stopped
        room.status = f"failed: {type(e).__name__}: {e}"
        room.publish()
        raise
