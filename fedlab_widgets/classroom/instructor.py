"""The instructor's side: a Flower SuperLink for the room, with TLS and SuperNode authentication.

:func:`serve` starts it all on this laptop: the CA and server certificate, the SuperLink
(every connection encrypted; only SuperNodes registered through the join desk may
connect), the join desk, and the classroom's ServerApp, which then waits for the
projector's commands. Every process it starts is stopped by :meth:`Classroom.stop`
(also on an error, and by the context manager).
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path

from ..config import run_parameter
from ..flower import app_run_config, require_flower
from ..flower.export import pyproject_text
from ..params import Param
from .room import Classroom
from .service import kit_version

__all__ = ["serve", "CLASSROOM_PARAMETERS", "make_code", "write_app"]

CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"   # no 0/O, 1/I: read off a projector

CLASSROOM_PARAMETERS = (
    Param("seats", 4, kind="int", lo=1, hi=200, doc="how many learners' laptops may join"),
    Param("port", 9092, kind="int", lo=1024, hi=65534,
          doc="the SuperLink's port (the join desk uses the next one)"),
    Param("round_timeout", 60.0, lo=1.0, hi=3600.0,
          doc="seconds a round waits for the seats' replies before it goes on without them"),
)


def make_code(n: int = 6, *, seed=None) -> str:
    """A class code: ``n`` letters and digits that read unambiguously from a projector."""
    rng = secrets.SystemRandom() if seed is None else random.Random(seed)
    return "".join(rng.choice(CODE_LETTERS) for _ in range(n))


_CLIENT = '''"""A seat: the kit's local training on this laptop's writers, with its role."""
import fcntl
import os
import time

# Many seats on one machine (bench/classroom.py): at most FEDLAB_SEAT_SLOTS ClientApps
# import torch and train at once, so that memory stays bounded; a laptop has one seat.
_slots, _slot = int(os.environ.get("FEDLAB_SEAT_SLOTS", "0")), None
while _slots and _slot is None:
    for _i in range(_slots):
        _f = open(os.path.join(os.environ["FEDLAB_SEAT_SLOT_DIR"], f"slot-{_i}"), "w")
        try:
            fcntl.lockf(_f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # held until this process exits
        except OSError:
            _f.close()
            continue
        _slot = _f
        break
    else:
        time.sleep(0.2)

from flwr.clientapp import ClientApp
from fedlab_widgets.classroom.app import seat_train

app = ClientApp()
app.train()(seat_train)
'''

_SERVER = '''"""The room: rounds when the instructor asks, on the seats online."""
from flwr.serverapp import ServerApp
from fedlab_widgets.classroom.app import classroom_main

app = ServerApp()
app.main()(classroom_main)
'''


def write_app(folder: Path, sim, control: Path) -> Path:
    """The classroom's Flower App: the experiment's run config and the seat/room code."""
    (folder / "classroomapp").mkdir(parents=True, exist_ok=True)
    cfg = {**app_run_config(sim, 1), "control-dir": str(control)}
    (folder / "pyproject.toml").write_text(pyproject_text(
        cfg, label="A classroom federation of fedlab-widgets", name="fedlab-classroom",
        package="classroomapp", kit=f'"fedlab-widgets=={kit_version()}"'))
    (folder / "classroomapp" / "__init__.py").write_text('"""The classroom app."""\n')
    (folder / "classroomapp" / "client_app.py").write_text(_CLIENT)
    (folder / "classroomapp" / "server_app.py").write_text(_SERVER)
    return folder


def serve(*, seats: int = 4, port: int = 9092, host: str = "0.0.0.0", code: str | None = None,
          model: str = "logreg", scheme: str = "writer", local_epochs: int = 1,
          batch_size: int = 20, lr: float = 0.1, seed: int = 0, round_timeout: float = 60.0,
          addresses=None, workdir=None) -> "Classroom":
    """Start a classroom federation on this laptop and return its :class:`Classroom`.

    Parameters
    ----------
    seats : int, default 4
        Seats 0 .. seats-1; seat ``k`` trains on client ``k`` of the partition.
    port : int, default 9092
        The SuperLink's port (Fleet and Control API, TLS); the join desk listens on
        ``port + 1``. The room's network must let learners reach both.
    host : str, default "0.0.0.0"
        The interface to listen on ("127.0.0.1": this machine only).
    code : str, optional
        The class code (default: six random letters and digits).
    model, scheme, local_epochs, batch_size, lr, seed
        The experiment: a model from ``get_model``, a partition scheme (``"writer"``:
        each seat holds a group of MNIST's real writers), the local training.
    round_timeout : float, default 60
        Seconds a round waits for replies; then it goes on with who reported.
    addresses : list of str, optional
        The names and IP addresses the server certificate is valid for (default:
        this machine's addresses and ``localhost``).

    Examples
    --------
    >>> from fedlab_widgets.classroom import serve
    >>> room = serve(seats=20)                 # doctest: +SKIP
    >>> room.card()                            # doctest: +SKIP
    """
    require_flower()
    seats = CLASSROOM_PARAMETERS[0].check(seats)
    port = CLASSROOM_PARAMETERS[1].check(port)
    round_timeout = CLASSROOM_PARAMETERS[2].check(round_timeout)
    for name, value in (("local_epochs", local_epochs), ("batch_size", batch_size), ("lr", lr),
                        ("seed", seed)):
        run_parameter(name).check(value)
    if code is not None and (not isinstance(code, str) or not 4 <= len(code.strip()) <= 32):
        raise ValueError(f"code must be a string of 4 to 32 characters; got {code!r}")
    room = Classroom(write_app, seats=seats, port=port, host=host, code=(code or make_code()).strip().upper(),
                     experiment=dict(model=model, scheme=scheme, local_epochs=local_epochs,
                                     batch_size=batch_size, lr=lr, seed=seed),
                     round_timeout=round_timeout, addresses=addresses, workdir=workdir)
    try:
        return room.start()
    except BaseException:
        room.stop()
        raise
