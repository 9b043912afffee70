"""The classroom federation, for real on one machine (issue 26).

An instructor (``serve``: a SuperLink with TLS and SuperNode authentication, the join
desk, the ServerApp) and four learner processes (``python -m fedlab_widgets classroom
join``) on the loopback interface. The global curve equals the simulation's on the same
seats; refusals (wrong code, wrong certificate, another kit version, an unregistered
SuperNode); roles take effect; a learner killed mid-round does not stall the round;
the instructor's stop leaves no process behind on either side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from unittest import mock

import pytest
import torch

from fedlab_widgets.classroom import (ClassroomError, ROLES, check_role, code_proof, fingerprint,
                                      join, make_certificates, make_node_key, serve)
from fedlab_widgets.classroom.roles import apply_role_update
from fedlab_widgets.flower.deployment import flower_env, free_port, processes_with, stop_processes

SEATS = 4
TAG = f"FEDLAB_CLASSROOM_TEST={uuid.uuid4().hex}"


# -- the pieces, alone ---------------------------------------------------------------------------
def test_certificates_pin_and_proofs(tmp_path):
    a = make_certificates(tmp_path / "a", hosts=["127.0.0.1", "localhost"])
    b = make_certificates(tmp_path / "b", hosts=["127.0.0.1"])
    assert a["fingerprint"] == fingerprint(a["ca"].read_bytes()) != b["fingerprint"]
    assert len(a["fingerprint"].split(":")) == 32
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(a["cert"].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    k = make_node_key(tmp_path / "k")
    pub = k["public"].read_bytes()
    assert pub.startswith(b"ecdsa-sha2-nistp384 ")
    assert code_proof("abc123", pub) == code_proof("ABC123 ", pub) != code_proof("ABC124", pub)
    assert code_proof("ABC123", pub) != code_proof("ABC123", make_node_key(tmp_path / "j")["public"].read_bytes())


def test_roles_are_checked_and_do_what_they_say():
    assert check_role("dp") == {"role": "dp", "clip_norm": 1.0, "noise_multiplier": 1.0}
    with pytest.raises(ValueError, match="^role must be one of"):
        check_role("spy")
    with pytest.raises(ValueError, match="^delay must be"):
        check_role("straggler", {"delay": -1})
    d = torch.randn(50, dtype=torch.float64)
    assert torch.equal(apply_role_update(check_role("sign_flip"), d, seed=0, round_=1, seat=0), -4 * d)
    dp = check_role("dp", {"clip_norm": 0.5, "noise_multiplier": 0.0})
    assert float(apply_role_update(dp, d * 100, seed=0, round_=1, seat=0).norm()) == pytest.approx(0.5)
    noisy = check_role("dp", {"clip_norm": 1.0, "noise_multiplier": 2.0})
    big = torch.zeros(200_000, dtype=torch.float64)
    assert float(apply_role_update(noisy, big, seed=0, round_=1, seat=0).std()) == pytest.approx(2.0, rel=0.02)
    assert set(ROLES) >= {"honest", "sign_flip", "backdoor", "straggler", "dropout", "dp"}


def test_bad_settings_are_refused_before_anything_starts():
    before = processes_with("FLWR_HOME=")
    for kwargs, start in (({"seats": 0}, "seats must be"), ({"port": 80}, "port must be"),
                          ({"lr": -1}, "lr must be"), ({"code": "ab"}, "code must be"),
                          ({"round_timeout": 0}, "round_timeout must be")):
        with pytest.raises(ValueError, match=f"^{start}"):
            serve(**kwargs)
    assert processes_with("FLWR_HOME=") == before
    with pytest.raises(ValueError, match="^address must be HOST:PORT"):
        join("nowhere", code="X", seat=0)
    with pytest.raises(ClassroomError, match="cannot reach the instructor's join desk"):
        join(f"127.0.0.1:{free_port()}", code="X", seat=0)


# -- the room, for real --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def room(tmp_path_factory):
    before = processes_with(TAG)
    # as in a Jupyter kernel, which may force colour codes into Flower's JSON output
    with mock.patch.dict(os.environ, {"FORCE_COLOR": "1", "TERM": "xterm-color"}):
        assert "FORCE_COLOR" not in flower_env(tmp_path_factory.mktemp("env"))
        r = serve(seats=SEATS, host="127.0.0.1", port=free_port(), addresses=["127.0.0.1"],
                  round_timeout=90, workdir=tmp_path_factory.mktemp("instructor"))
    env = {**os.environ, TAG.split("=")[0]: TAG.split("=")[1]}
    learners = [subprocess.Popen([sys.executable, "-m", "fedlab_widgets", "classroom", "join",
                                  r.address, "--code", r.code, "--seat", str(k),
                                  "--fingerprint", r.fingerprint],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for k in range(SEATS)]
    r.learners = learners
    r.before = before
    try:
        r.wait_for_seats(SEATS, timeout=180)
        yield r
    finally:
        r.stop()
        for p in learners:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_room_learns_what_the_simulation_learns(room):
    recs = room.run_rounds(2)
    h = room.simulation().run(2, progress=False)
    assert [r["reported"] for r in recs] == [list(range(SEATS))] * 2
    for r, s in zip(recs, h.records):
        assert r["accuracy"] == pytest.approx(s.accuracy, abs=1e-4), (r["accuracy"], s.accuracy)
        # every seat received exactly the global model the server sent, nothing else
        assert set(r["received"].values()) == {r["sent"]}
    assert recs[-1]["accuracy"] > 0.85
    assert room.history.accuracy[-1] == recs[-1]["accuracy"]


def test_refusals(room, tmp_path):
    with pytest.raises(ClassroomError, match="class code is wrong"):
        join(room.address, code="WRONG1", seat=0, fingerprint=room.fingerprint, workdir=tmp_path / "a")
    with pytest.raises(ClassroomError, match="certificate mismatch"):
        join(room.address, code=room.code, seat=0, fingerprint="AB:" * 31 + "AB", workdir=tmp_path / "b")
    with pytest.raises(ClassroomError, match=f"seat must be from 0 to {SEATS - 1}"):
        join(room.address, code=room.code, seat=SEATS, workdir=tmp_path / "c")
    with pytest.raises(ClassroomError, match="seat 1 is taken"):
        join(room.address, code=room.code, seat=1, fingerprint=room.fingerprint, workdir=tmp_path / "d")
    kit = room.desk.card["kit"]
    room.desk.card["kit"] = "0.0.0"
    try:
        with pytest.raises(ClassroomError, match="kit's version differs"):
            join(room.address, code=room.code, seat=0, workdir=tmp_path / "e")
    finally:
        room.desk.card["kit"] = kit
    assert any("class code is wrong" in r["why"] for r in room.refused)
    # a SuperNode whose key was never registered is refused by the SuperLink itself
    key = make_node_key(tmp_path / "rogue")
    (tmp_path / "ca.pem").write_bytes(room.ca_pem)
    log = tmp_path / "rogue.log"
    home = f"FLWR_HOME={tmp_path / 'rogue-home'}"
    with log.open("w") as out:
        rogue = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "flower-supernode"),
                                  "--root-certificates", str(tmp_path / "ca.pem"), "--superlink",
                                  room.address, "--auth-supernode-private-key", str(key["private"]),
                                  "--port", str(free_port()), "--node-config", "seat=0"],
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, home.split("=")[0]: home.split("=", 1)[1],
                                      "PATH": os.path.dirname(sys.executable) + os.pathsep
                                      + os.environ.get("PATH", "")})
    try:
        assert rogue.wait(120) != 0
    finally:
        stop_processes([rogue], home)
    assert "Failed to activate SuperNode" in log.read_text()
    assert sorted(room.online) == list(range(SEATS))


def test_roles_take_effect(room):
    honest = room.records[-1]["accuracy"]
    room.assign(1, "sign_flip", scale=8)
    room.assign(2, "dropout")
    room.assign(3, "straggler", delay=3)
    r = room.run_rounds(1)[0]
    assert r["failed"] == [2] and r["reported"] == [0, 1, 3]
    norm = r["norm"]    # the flipped update is scale times the seat's honest one
    assert norm[1] > 4 * max(norm[0], norm[3])
    assert r["train_seconds"][3] < r["seconds"] and r["seconds"] > 3
    assert r["accuracy"] < honest - 0.05, (r["accuracy"], honest)
    room.assign(2)
    room.assign(3)
    room.use("fedavg", "median")
    r = room.run_rounds(1)[0]
    assert r["accuracy"] > honest - 0.05, (r["accuracy"], honest)
    assert room.reveal() == {1: "sign_flip", 2: "dropout", 3: "straggler"}
    room.assign(1)
    room.use("fedavg", "mean")


def test_a_learner_killed_mid_round_does_not_stall_it(room):
    room.assign(3, "straggler", delay=120)
    t0 = time.monotonic()
    room.run_rounds(1, wait=False)
    while 3 not in _training(room):
        time.sleep(0.2)
        assert time.monotonic() - t0 < 120
    seat3 = [p for p in processes_with(TAG) if f"--seat\x003".encode() in _cmdline(p)]
    for pid in processes_with(f"FLWR_HOME={_seat_home(room, 3)}"):
        os.kill(pid, signal.SIGKILL)
    room.wait(timeout=200)
    r = room.records[-1]
    assert r["reported"] == [0, 1, 2] and 3 in r["late"]
    assert time.monotonic() - t0 < room.round_timeout + 60
    room.assign(3)
    learner = room.learners[3]
    assert learner.wait(60) == 0 and "SuperNode stopped" in learner.stdout.read()
    assert seat3


def test_stop_leaves_no_process_behind(room):
    mine = processes_with(TAG)
    assert len(mine) >= 3 * (SEATS - 1)   # join, SuperNode, SuperExec of each seat left
    room.stop()
    for p in room.learners:
        assert p.wait(60) == 0
    for p in room.learners[:3]:
        assert "the instructor ended the class" in p.stdout.read()
    time.sleep(1)
    assert processes_with(TAG) == room.before == []
    assert room.processes() == []


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_learner_whose_kernel_is_killed_leaves_no_supernode(tmp_path):
    """kill -9 of the learner's Python process (no chance to leave): its SuperNode stops too."""
    with serve(seats=1, host="127.0.0.1", port=free_port(), addresses=["127.0.0.1"],
               workdir=tmp_path / "instructor") as r:
        code = (f"from fedlab_widgets.classroom import join\n"
                f"me = join({r.address!r}, code={r.code!r}, seat=0, fingerprint={r.fingerprint!r})\n"
                f"print(me.env['FLWR_HOME'], flush=True)\nimport time; time.sleep(600)\n")
        kernel = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        home = kernel.stdout.readline().strip()
        r.wait_for_seats(1, timeout=120)
        assert processes_with(f"FLWR_HOME={home}")
        kernel.kill()
        kernel.wait()
        t0 = time.monotonic()
        while processes_with(f"FLWR_HOME={home}") and time.monotonic() - t0 < 30:
            time.sleep(0.5)
        assert processes_with(f"FLWR_HOME={home}") == [], "the SuperNode outlived its learner"


def _training(room) -> set[int]:
    import json
    out = set()
    for home in _seat_homes():
        try:
            s = json.loads((home.parent / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if s.get("round") == len(room.records) + 1:
            out.add(s["seat"])
    return out


def _seat_homes():
    from pathlib import Path
    homes = set()
    for pid in processes_with(TAG):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for e in env:
            if e.startswith(b"FLWR_HOME=") and b"fedlab-seat-" in e:
                homes.add(Path(e[10:].decode()))
    return homes


def _seat_home(room, seat: int):
    return next(h for h in _seat_homes() if f"fedlab-seat-{seat}-" in str(h))
