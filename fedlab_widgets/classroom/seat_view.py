"""A learner's status widget: connected, rounds taken part in, bytes sent, accuracies."""

from __future__ import annotations

import threading

import ipywidgets as W

__all__ = ["SeatView", "describe_seat"]


def describe_seat(s: dict) -> str:
    """The seat's status as one HTML paragraph."""
    if s["left"]:
        head = f"<b>left the class</b>: {s['left']}"
    elif s["connected"]:
        head = "<b style='color:#2a2'>connected</b>"
    else:
        head = "<b>waiting for the first round</b>"
    rounds = len(s["rounds"])
    body = (f"seat {s['seat']}: {head}<br>rounds taken part in: {rounds}"
            f"{' (skipped ' + str(len(s['skipped'])) + ')' if s['skipped'] else ''}<br>"
            f"what left this laptop: {s['bytes_up']:,} bytes (your model after each round; no "
            f"digit); what arrived: {s['bytes_down']:,} bytes (the global model only)")
    if s["global_accuracy"] is not None:
        body += (f"<br>on the test set: the global model {s['global_accuracy']:.1%}, the model "
                 f"you trained this round {s['own_accuracy']:.1%}")
    return f"<div style='font-family:sans-serif'>{body}</div>"


class SeatView(W.HTML):
    """Refreshes itself every ``refresh`` seconds until the seat has left."""

    def __init__(self, seat, *, refresh: float = 1.0):
        super().__init__(describe_seat(seat.status()))
        self.seat_ = seat
        self._stop = threading.Event()
        threading.Thread(target=self._loop, args=(refresh,), daemon=True).start()

    def _loop(self, refresh: float) -> None:
        while not self._stop.wait(refresh):
            self.value = describe_seat(self.seat_.status())
            if self.seat_.ended.is_set():
                self.value = describe_seat(self.seat_.status())
                return
