"""The projector: seats connected (and who dropped), roles set live, the global curve.

::

    room = serve(seats=20)
    Projector(room)        # the join card, the seats, Run, the curve, who contributed what

Every control acts on the :class:`~fedlab_widgets.classroom.Classroom`; a bad value
shows a message and changes nothing.
"""

from __future__ import annotations

import threading

import ipywidgets as W
import matplotlib.pyplot as plt

from .roles import ROLES

__all__ = ["Projector", "plot_room"]

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum")


def plot_room(records, *, initial=None, ax=None, bars_ax=None):
    """The global model's test accuracy per round (and a backdoor's success), and the last
    round's update norm per seat (more than twice the median norm in red)."""
    if ax is None:
        _, (ax, bars_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    rounds = [0] + [r["round"] for r in records] if initial is not None else [r["round"] for r in records]
    acc = ([initial] if initial is not None else []) + [r["accuracy"] for r in records]
    ax.plot(rounds, [100 * a for a in acc], "o-", label="global model (test set)")
    bd = [(r["round"], 100 * r["backdoor"]) for r in records if "backdoor" in r]
    if bd:
        ax.plot(*zip(*bd), "s--", color="tab:red", label="backdoor success")
    ax.set(xlabel="round", ylabel="%", ylim=(0, 100), title="the room's global model")
    ax.legend(loc="lower right", fontsize=8)
    if bars_ax is not None and records and records[-1].get("norm"):
        norm = {int(k): v for k, v in records[-1]["norm"].items()}
        seats = sorted(norm)
        typical = sorted(norm.values())[len(norm) // 2]
        bars_ax.bar([str(s) for s in seats], [norm[s] for s in seats],
                    color=["tab:red" if norm[s] > 2 * typical else "tab:blue" for s in seats])
        bars_ax.set(xlabel="seat", ylabel="norm of its update",
                    title=f"what each seat sent (round {records[-1]['round']})")
    return ax


class Projector(W.VBox):
    """The instructor's widget for a running :class:`Classroom`."""

    def __init__(self, room, *, address: str | None = None):
        self.room = room
        self.card = W.HTML(room.card(address)._repr_html_())
        self.seats = W.HTML()
        self.seat = W.BoundedIntText(0, min=0, max=room.seats - 1, description="seat")
        self.role = W.Dropdown(options=ROLES, value="honest", description="role")
        self.assign_button = W.Button(description="Assign (secretly)")
        self.aggregator = W.Dropdown(options=AGGREGATORS, value=room.aggregator, description="aggregator")
        self.rounds = W.BoundedIntText(1, min=1, max=100, description="rounds")
        self.run_button = W.Button(description="Run", button_style="success")
        self.reveal_button = W.Button(description="Reveal roles")
        self.message = W.HTML()
        self.plot = W.Output(layout=W.Layout(min_height="260px"))
        self.assign_button.on_click(lambda _: self.assign())
        self.run_button.on_click(lambda _: self.run())
        self.reveal_button.on_click(lambda _: self.reveal())
        self._thread = None
        super().__init__([self.card, self.seats,
                          W.HBox([self.seat, self.role, self.assign_button]),
                          W.HBox([self.aggregator, self.rounds, self.run_button, self.reveal_button]),
                          self.message, self.plot])
        self.refresh()

    def say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#333"
        self.message.value = f"<span style='color:{colour}'>{text}</span>"

    def assign(self) -> None:
        try:
            r = self.room.assign(int(self.seat.value), self.role.value)
        except ValueError as e:
            return self.say(str(e), error=True)
        self.say(f"seat {self.seat.value}: role set ({len(self.room.roles)} seat(s) not honest); "
                 f"it takes effect from the next round")
        return r

    def run(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return self.say("rounds are running; wait for them to finish", error=True)
        try:
            self.room.use("fedavg", self.aggregator.value)
        except ValueError as e:
            return self.say(str(e), error=True)
        self._thread = threading.Thread(target=self._run, args=(int(self.rounds.value),), daemon=True)
        self._thread.start()

    def _run(self, n: int) -> None:
        self.run_button.disabled = True
        try:
            for _ in range(n):
                self.say(f"round {len(self.room.records) + 1} running on seats {self.room.online}")
                self.room.run_rounds(1)
                self.refresh()
            self.say(f"{n} round(s) done")
        except (RuntimeError, TimeoutError) as e:
            self.say(str(e), error=True)
        finally:
            self.run_button.disabled = False

    def wait(self, timeout: float | None = None) -> None:
        """Block until the rounds started with Run have finished (for notebooks run top to bottom)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def reveal(self) -> dict:
        roles = self.room.reveal()
        self.say("roles played: " + (", ".join(f"seat {s}: {r}" for s, r in roles.items())
                                     or "everyone was honest"))
        return roles

    def refresh(self) -> None:
        st = self.room.state()
        online, seen = st.get("online", []), st.get("seen", [])
        recs = st.get("records", [])
        last = recs[-1] if recs else {}
        cells = []
        for s in range(self.room.seats):
            colour = "#2a2" if s in online else "#c33" if s in seen else "#bbb"
            word = "online" if s in online else "dropped" if s in seen else "empty"
            took = sum(s in r["reported"] for r in recs)
            cells.append(f"<td style='padding:3px 8px;border:1px solid #ddd;color:{colour}'>"
                         f"<b>{s}</b> {word}<br><small>{took} round(s)</small></td>")
        timing = (f"last round: {last['seconds']:.1f} s, {len(last['reported'])} reported, "
                  f"dropped {last['failed'] + last['late']}" if last else "no round yet")
        refused = len(self.room.refused)
        self.seats.value = (f"<table><tr>{''.join(cells)}</tr></table><small>{len(online)} online; "
                            f"{timing}; {refused} join attempt(s) refused</small>")
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.4))
            plot_room(recs, initial=st.get("initial_accuracy"), ax=ax, bars_ax=bx)
            fig.tight_layout()
            plt.show(fig)
