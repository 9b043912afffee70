"""``python -m fedlab_widgets classroom serve|join``: the classroom from a terminal."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fedlab_widgets classroom",
                                description="A classroom federation: the instructor serves, "
                                            "each learner's laptop joins.")
    sub = p.add_subparsers(dest="side", required=True)
    s = sub.add_parser("serve", help="start the instructor's SuperLink (TLS, node auth) and join desk")
    s.add_argument("--seats", type=int, default=4)
    s.add_argument("--port", type=int, default=9092, help="the SuperLink's port; the join desk "
                                                           "uses the next one")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--code", default=None)
    s.add_argument("--model", default="logreg")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--round-timeout", type=float, default=60.0)
    s.add_argument("--wait-seats", type=int, default=None,
                   help="start the rounds once this many seats are online (default: all)")
    s.add_argument("--rounds", type=int, default=5, help="rounds to run, then end the class")
    j = sub.add_parser("join", help="join a class from this laptop")
    j.add_argument("address", help="HOST:PORT from the join card")
    j.add_argument("--code", required=True)
    j.add_argument("--seat", type=int, required=True)
    j.add_argument("--fingerprint", default=None)
    return p


def _serve(a) -> int:
    from .instructor import serve
    with serve(seats=a.seats, port=a.port, host=a.host, code=a.code, model=a.model, seed=a.seed,
               round_timeout=a.round_timeout) as room:
        print(repr(room.card()), flush=True)
        online = room.wait_for_seats(a.wait_seats, timeout=3600)
        print(f"seats online: {online}", flush=True)
        for _ in range(a.rounds):
            r = room.run_rounds(1)[0]
            print(f"round {r['round']}: accuracy {r['accuracy']:.2%}, seats {r['reported']}, "
                  f"dropped {r['failed'] + r['late']}, {r['seconds']:.1f} s", flush=True)
    print("class ended; every process stopped", flush=True)
    return 0


def _join(a) -> int:
    from .learner import join
    me = join(a.address, code=a.code, seat=a.seat, fingerprint=a.fingerprint)
    print(f"joined as seat {a.seat}; waiting for rounds", flush=True)
    seen = 0
    try:
        while not me.wait(0.5):
            s = me.status()
            if len(s["rounds"]) > seen:
                seen = len(s["rounds"])
                print(f"round {s['rounds'][-1]}: the global model {s['global_accuracy']:.2%}, "
                      f"yours {s['own_accuracy']:.2%}; sent {s['bytes_up']:,} bytes", flush=True)
    except KeyboardInterrupt:
        me.leave()
    print(f"left: {me.reason}", flush=True)
    return 0


def main(argv=None) -> int:
    from .learner import ClassroomError
    a = build_parser().parse_args(argv)
    try:
        return _serve(a) if a.side == "serve" else _join(a)
    except ClassroomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
