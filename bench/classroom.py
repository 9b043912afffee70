"""How many learners does one instructor's laptop serve? The classroom federation, measured.

For each room size N (default 1, 5, 20, 50): ``classroom.serve(seats=N)`` on the loopback
interface (a SuperLink with TLS and SuperNode authentication, the join desk, the ServerApp),
then N learners join as a learner's notebook does (``classroom.join``: the CA pinned by its
fingerprint, a key pair registered with the class code, an authenticated ``flower-supernode``
process per seat), then ``--rounds`` rounds of FedAvg (logreg, MNIST's writers, E = 1, B = 50).
Per size it prints the time for the N seats to join and come online, each round's wall time,
the server's own work in it (messages, aggregation, evaluation: what the instructor's laptop
does however many laptops train), the seats' mean time inside their ClientApp, rounds per
minute, and the memory (PSS) of every process the room and its seats started.

On one machine every seat's ClientApp process (started by its SuperNode for each round:
imports, the seat's data, training) shares the same cores, so the round grows with N; and
each holds about 0.4 GB (most of it PyTorch's own libraries), so at most ``--slots`` of
them (default 8) run at once, the others waiting for a slot before they import torch. In a
real room each laptop trains in parallel: the round lasts about as long as one seat's
ClientApp on the slowest laptop plus the server's work: the last table extrapolates from
a one-seat round (one ClientApp alone on this machine) and the server's measured work per seat.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/classroom.py                      # 1, 5, 20, 50 seats, 2 rounds each (~15 minutes)
    python bench/classroom.py --seats 1 5 20 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np

from fedlab_widgets.classroom import join, serve
from fedlab_widgets.experiments import format_table
from fedlab_widgets.flower.deployment import free_port, processes_with


def memory_mb(pids) -> float:
    """Proportional set size of ``pids`` in MB (shared pages split among the processes that
    share them, so the sum is what they take together; 0 for those that have gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            pass
    return total / 1e6


def measure(n: int, rounds: int) -> dict:
    t0 = time.monotonic()
    room = serve(seats=n, host="127.0.0.1", port=free_port(), addresses=["127.0.0.1"],
                 batch_size=50, round_timeout=900)
    seats = []
    try:
        t_served = time.monotonic() - t0
        seats = [join(room.address, code=room.code, seat=k, fingerprint=room.fingerprint)
                 for k in range(n)]
        room.wait_for_seats(n, timeout=60 + 10 * n)
        t_online = time.monotonic() - t0
        pids = room.processes() + [p for s in seats for p in s.processes()]
        idle = memory_mb(pids)
        peak, done = [idle], threading.Event()

        def sample():
            while not done.wait(0.5):
                peak.append(memory_mb(room.processes() + [p for s in seats for p in s.processes()]))

        threading.Thread(target=sample, daemon=True).start()
        try:
            recs = room.run_rounds(rounds, timeout=rounds * (120 + 15 * n))
        finally:
            done.set()
        assert all(r["reported"] == list(range(n)) for r in recs), [r["reported"] for r in recs]
    finally:
        room.stop()
        for s in seats:
            s.wait(30)
    left = room.processes() + [p for s in seats for p in s.processes()]
    secs = [r["seconds"] for r in recs]
    return {"seats": n, "serve s": t_served, "all online s": t_online,
            "round s": float(np.mean(secs)), "rounds/min": 60 / float(np.mean(secs)),
            "server work s": float(np.mean([r["server_seconds"] for r in recs])),
            "seat ClientApp s": float(np.mean([np.mean(list(r["train_seconds"].values())) for r in recs])),
            "idle MB": idle, "peak MB": max(peak), "accuracy": recs[-1]["accuracy"],
            "left behind": len(left)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seats", type=int, nargs="+", default=[1, 5, 20, 50],
                    help="room sizes; the first (one seat) is the base of the extrapolation")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8,
                    help="ClientApps that may import torch and train at once on this machine "
                         "(0: no limit; 50 at once need about 20 GB)")
    args = ap.parse_args()
    if args.slots:
        os.environ["FEDLAB_SEAT_SLOTS"] = str(args.slots)
        os.environ["FEDLAB_SEAT_SLOT_DIR"] = tempfile.mkdtemp(prefix="fedlab-slots-")
    rows = []
    for n in args.seats:
        rows.append(measure(n, args.rounds))
        print(format_table(rows[-1:], floatfmt=".2f"), flush=True)
    print("\nmeasured on this machine (every seat's process on its cores):")
    print(format_table(rows, floatfmt=".2f"))
    ns = np.array([r["seats"] for r in rows], dtype=float)
    if len(ns) >= 2:
        # a round's wall time on one machine: a + b * N (every seat's ClientApp on its cores);
        # the server's own work: c + d * N (the part one instructor's laptop pays in a real room)
        b, a = np.polyfit(ns, [r["round s"] for r in rows], 1)
        d, c = np.polyfit(ns, [r["server work s"] for r in rows], 1)
        lone = rows[0]["round s"]
        print(f"\nfitted: one machine's round = {a:.1f} s + {b:.2f} s per seat; the server's work "
              f"= {c:.2f} s + {d * 1000:.1f} ms per seat; a round of {rows[0]['seats']} seat(s) "
              f"{lone:.1f} s")
        ext = [{"seats": n, "one machine: round s": a + b * n,
                "a room of laptops: round s": lone + d * (n - ns[0]),
                "rounds/min (room)": 60 / (lone + d * (n - ns[0])),
                "server work s": c + d * n} for n in (5, 20, 50, 100, 200)]
        print("extrapolated: on one machine from the fit; in a room of laptops, where each seat "
              "trains on its own cores, a round lasts the smallest room's round plus the server's "
              "extra work per seat (the laptops' own speed and the network add to it):")
        print(format_table(ext, floatfmt=".1f"))
    print(f"processes left behind: {sum(r['left behind'] for r in rows)}; "
          f"with FLWR_HOME set: {len(processes_with('FLWR_HOME='))}")


if __name__ == "__main__":
    main()
