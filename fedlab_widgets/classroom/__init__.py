"""A classroom federation: every learner's laptop a real client of the instructor's server.

The instructor runs :func:`serve` (or ``python -m fedlab_widgets classroom serve``):
a Flower SuperLink on the room's network with TLS (a CA made on the spot) and
SuperNode authentication (only keys registered with the class code connect), a
join desk, and the classroom's ServerApp. The projector shows the join card and
:class:`Projector` (seats, roles, the live curve). Each learner runs :func:`join`
(or ``classroom join``): their laptop becomes a SuperNode training on its seat's
writers. See notebooks 14 and 14b and the instructor's guide.

Examples
--------
>>> from fedlab_widgets.classroom import serve, join, check_role
>>> check_role("straggler", {"delay": 2})
{'role': 'straggler', 'delay': 2.0}
>>> room = serve(seats=4, host="127.0.0.1")                              # doctest: +SKIP
>>> me = join(room.address, code=room.code, seat=0, fingerprint=room.fingerprint)  # doctest: +SKIP
"""

from .instructor import CLASSROOM_PARAMETERS, make_code, serve
from .keys import code_proof, fingerprint, make_certificates, make_node_key
from .learner import ClassroomError, Seat, join
from .projector import Projector, plot_room
from .roles import ROLE_PARAMETERS, ROLES, check_role
from .room import Classroom, JoinCard

__all__ = ["serve", "join", "Classroom", "Seat", "JoinCard", "ClassroomError", "ROLES",
           "ROLE_PARAMETERS", "check_role", "make_code", "CLASSROOM_PARAMETERS", "fingerprint",
           "make_certificates", "make_node_key", "code_proof", "Projector", "plot_room"]
