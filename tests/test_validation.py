"""One validation for every setting, in every front end (scikit-learn's check_param_validation).

For every Param of every table (the run table, the partition schemes, the algorithms, the
aggregators, the attacks, the compressors, the dashboard's own), invalid values are
generated from the Param itself (out of range, NaN, infinity, a bool, a numeric string, a
wrong type) and must be refused, before any training, with the Param's one message:

* by the Python API (``RunConfig`` / ``Simulation``, ``partition``, ``algorithms.get``,
  ``attacks.get``, ``compression.get``);
* by the command line (exit 2, one line naming the flag, then the same message), before
  the data are read (the data folder given is empty);
* by the dashboard (its constructor and ``update``), where the setting has a control.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fedlab_widgets import Simulation, algorithms, attacks, cli, compression, partition
from fedlab_widgets.config import RUN_PARAMETERS, RunConfig
from fedlab_widgets.datasets import FederatedDataset
from fedlab_widgets.frontends.explorer import DATA_PARAMETERS, SCHEME_PARAMETER
from fedlab_widgets.frontends.settings import CHOOSERS, DASHBOARD_PARAMETERS, RUN_SHOWN
from fedlab_widgets.partition import PARTITION_SCHEMES
from fedlab_widgets.params import Param


def invalid_values(prm: Param) -> list:
    """Values the Param must refuse, generated from its declaration."""
    bad = [[1], object()] + ([] if prm.kind == "bool" else [True])
    if not prm.none:
        bad.append(None)
    if prm.kind in ("float", "int"):
        bad += ["0.5" if prm.kind == "float" else "3", math.nan, math.inf, -math.inf]
        if prm.kind == "int":
            bad.append(2.5)
        if prm.lo is not None:
            bad.append(prm.lo if prm.lo_open else (prm.lo - 1 if prm.kind == "int" else prm.lo - 0.5))
        if prm.hi is not None and prm.hi < 2 ** 62:
            bad.append(prm.hi if prm.hi_open else (prm.hi + 1 if prm.kind == "int" else prm.hi + 0.5))
    elif prm.kind == "bool":
        bad += ["no", 1, 0.0]
    elif prm.kind == "choice":
        bad += ["no-such-" + prm.name, 1]
    elif prm.kind == "pair":
        bad += [(0.9, 0.2), "ab", (0.5,), (math.nan, 1.0)]
        if prm.lo is not None:
            bad.append((prm.lo, prm.hi) if prm.lo_open else (prm.lo - 1, prm.hi))
    return [b for b in bad if b not in prm.special]


def cases(table) -> list:
    return [pytest.param(prm, v, id=f"{prm.name}={v!r}"[:60]) for prm in table
            for v in invalid_values(prm)]


def expected(prm: Param, name: str | None = None) -> str:
    """The message before "; got ...": the parameter's name and its valid range."""
    return f"{name or prm.name} must be {prm.range_text()}; got "


def refused(fn, prm, value, name=None):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert msg.startswith(expected(prm, name)), msg
    return msg


@pytest.fixture(scope="module")
def tiny():
    """A 100-image stand-in for MNIST: every refusal comes before any data is looked at."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(100, 1, 28, 28, generator=g)
    labels = torch.arange(100) % 10
    classes = [str(i) for i in range(10)]
    return (FederatedDataset(images, labels, classes, "tiny", "train"),
            FederatedDataset(images[:20], labels[:20], classes, "tiny", "test"))


# -- the Python API -------------------------------------------------------------------------------
@pytest.mark.parametrize("prm,value", cases(RUN_PARAMETERS))
def test_api_refuses_bad_run_settings(prm, value, tiny):
    train, test = tiny
    parts = partition(train.labels, "iid", 10)
    refused(lambda: RunConfig(**{prm.name: value}), prm, value)
    refused(lambda: Simulation("logreg", train, test, parts, **{prm.name: value}), prm, value)


SCHEME_CASES = [pytest.param(s, prm, v, id=f"{s}:{prm.name}={v!r}"[:60])
                for s, table in PARTITION_SCHEMES.table().items() for prm in table
                for v in invalid_values(prm)]


@pytest.mark.parametrize("scheme,prm,value", SCHEME_CASES)
def test_api_refuses_bad_partition_parameters(scheme, prm, value):
    refused(lambda: partition(torch.arange(100) % 10, scheme, 10, **{prm.name: value}), prm, value)


def _family_cases():
    out = []
    for name, table in algorithms.PARAMETERS.items():
        out += [pytest.param("algorithm", name, prm, v, id=f"{name}:{prm.name}={v!r}"[:60])
                for prm in table for v in invalid_values(prm)]
    for name, table in algorithms.AGGREGATOR_PARAMETERS.items():
        out += [pytest.param("aggregator", name, prm, v, id=f"{name}:{prm.name}={v!r}"[:60])
                for prm in table for v in invalid_values(prm)]
    for fam, tables in (("attack", attacks.PARAMETERS),
                        ("compression", compression.COMPRESSION_PARAMETERS)):
        out += [pytest.param(fam, name, prm, v, id=f"{name}:{prm.name}={v!r}"[:60])
                for name, table in tables.items() for prm in table for v in invalid_values(prm)]
    for prm in algorithms.SECAGG_PARAMETERS:
        out += [pytest.param("secagg", "fedavg", prm, v, id=f"secagg:{prm.name}={v!r}"[:60])
                for v in invalid_values(prm)]
    return out


FAMILY_CASES = _family_cases()


def _build(family, name, prm, value):
    kw = {prm.name: value}
    if family == "algorithm":
        return algorithms.get(name, **kw)
    if family == "aggregator":
        return algorithms.get("fedavg", aggregator=name, **kw)
    if family == "secagg":
        return algorithms.get("fedavg", secure_aggregation=True, **kw)
    return (attacks.get if family == "attack" else compression.get)(name, **kw)


@pytest.mark.parametrize("family,name,prm,value", FAMILY_CASES)
def test_api_refuses_bad_parameters_of_named_things(family, name, prm, value):
    refused(lambda: _build(family, name, prm, value), prm, value)


# -- the command line -------------------------------------------------------------------------------
def _cli_texts(prm: Param) -> list[str]:
    """What can be typed: out of range, NaN, infinity, not a number."""
    texts = []
    for v in invalid_values(prm):
        if isinstance(v, float) and not math.isfinite(v) or (
                isinstance(v, (int, float)) and not isinstance(v, bool)):
            texts.append(str(v))
    texts = [t for t in texts if t not in cli.NONE_WORDS.get(prm.name, ())]
    if prm.kind in ("float", "int"):
        texts.append("abc")
    if prm.kind == "choice":
        texts.append("no-such-choice")
    return texts


def run_cli(capsys, *argv, data_dir):
    code = cli.main(["run", "--data-dir", str(data_dir), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


RUN_FLAG_CASES = [pytest.param(prm, t, id=f"{prm.name}={t}") for prm in RUN_PARAMETERS
                  if prm.kind != "pair" for t in _cli_texts(prm)]


@pytest.mark.parametrize("prm,text", RUN_FLAG_CASES)
def test_cli_refuses_bad_run_flags_before_reading_data(prm, text, capsys, tmp_path):
    code, err = run_cli(capsys, f"{cli.run_flags(prm)[0]}={text}", data_dir=tmp_path)
    assert code == 2 and len(err) == 1, err
    flags = "/".join(cli.run_flags(prm))
    assert err[0].startswith(f"fedlab-widgets: error: {flags}: {expected(prm)}"), err


def test_cli_refuses_a_bad_pair(capsys, tmp_path):
    prm = next(p for p in RUN_PARAMETERS if p.kind == "pair")
    code, err = run_cli(capsys, "--straggler-work", "0.9", "0.2", data_dir=tmp_path)
    assert code == 2 and f"--straggler-work: {expected(prm)}" in err[0]


def _table_flag_cases():
    out = []
    groups = [("--algorithm", algorithms.PARAMETERS, ""),
              ("--aggregator", algorithms.AGGREGATOR_PARAMETERS, ""),
              ("--attack", attacks.PARAMETERS, "attack_"),
              ("--compression", compression.COMPRESSION_PARAMETERS, "compression_")]
    for option, tables, prefix in groups:
        for name, table in tables.items():
            for prm in table:
                out += [pytest.param(option, name, prefix, prm, t,
                                     id=f"{name}:{prm.name}={t}") for t in _cli_texts(prm)]
    return out


@pytest.mark.parametrize("option,name,prefix,prm,text", _table_flag_cases())
def test_cli_refuses_bad_parameter_flags_before_reading_data(option, name, prefix, prm, text,
                                                             capsys, tmp_path):
    flag = "--" + (prefix + prm.name).replace("_", "-")
    code, err = run_cli(capsys, option, name, f"{flag}={text}", data_dir=tmp_path)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"fedlab-widgets: error: {flag}: {expected(prm)}"), err


@pytest.mark.parametrize("scheme,prm,value", [c for c in SCHEME_CASES
                                               if isinstance(c.values[2], float)
                                               and not isinstance(c.values[2], bool)][:12])
def test_cli_refuses_bad_partition_flags_before_reading_data(scheme, prm, value, capsys, tmp_path):
    flag = "--" + prm.name.replace("_", "-")
    code = cli.main(["partition", "--data-dir", str(tmp_path), "--partition", scheme,
                     f"{flag}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[0].startswith(f"fedlab-widgets: error: {flag}: {expected(prm)}"), err


# -- the dashboard ---------------------------------------------------------------------------------
def _dashboard_params():
    from fedlab_widgets.frontends.settings import SECTIONS, setting_parameter

    shown = [n for _, names in SECTIONS.values() for n in names]
    return [setting_parameter(n) for n in shown]


DASHBOARD_CASES = [pytest.param(prm, v, id=f"{prm.name}={v!r}"[:60])
                   for prm in _dashboard_params() for v in invalid_values(prm)]


@pytest.fixture(scope="module")
def board(tiny):
    from fedlab_widgets.widgets import FedAvgDashboard

    return FedAvgDashboard(*tiny, num_clients=10)


@pytest.mark.parametrize("prm,value", DASHBOARD_CASES)
def test_dashboard_refuses_bad_values_and_changes_nothing(prm, value, tiny, board):
    from fedlab_widgets.widgets import FedAvgDashboard

    refused(lambda: FedAvgDashboard(*tiny, **{prm.name: value}), prm, value)
    before = board.settings()
    refused(lambda: board.update(**{prm.name: value}), prm, value)
    assert board.settings() == before


def test_every_setting_is_covered():
    """The counts the closing note of issue 20 quotes: parameters x front ends."""
    api = len(RUN_PARAMETERS) + sum(len(t) for t in PARTITION_SCHEMES.table().values()) + \
        sum(len(t) for t in algorithms.PARAMETERS.values()) + \
        sum(len(t) for t in algorithms.AGGREGATOR_PARAMETERS.values()) + \
        sum(len(t) for t in attacks.PARAMETERS.values()) + \
        sum(len(t) for t in compression.COMPRESSION_PARAMETERS.values()) + \
        len(algorithms.SECAGG_PARAMETERS)
    dashboard = len(_dashboard_params())
    assert set(RUN_SHOWN) <= {p.name for p in _dashboard_params()}
    assert {p.name for p in DATA_PARAMETERS + DASHBOARD_PARAMETERS} <= \
        {p.name for p in _dashboard_params()}
    assert api >= 50 and dashboard >= 40
    assert all(prm is not None for prm in SCHEME_PARAMETER.values() if prm)
    assert dataclasses.is_dataclass(RUN_PARAMETERS[0]) and CHOOSERS


def test_no_two_tables_claim_one_name_in_a_front_end():
    """One flag and one control per name: a parameter name means one thing in the CLI and
    the dashboard (FedDyn's alpha is dyn_alpha, not the Dirichlet alpha)."""
    from fedlab_widgets.frontends.settings import SECTIONS, setting_parameter

    cli.build_parser()                                 # argparse refuses a flag given twice
    owners = {}
    for tables, prefix in ((PARTITION_SCHEMES.table(), ""), (algorithms.PARAMETERS, ""),
                           (algorithms.AGGREGATOR_PARAMETERS, ""), (attacks.PARAMETERS, "attack_")):
        for owner, table in tables.items():
            for prm in table:
                owners.setdefault(prefix + prm.name, set()).add(id(tables))
    clash = {n for n, o in owners.items() if len(o) > 1}
    assert not clash, clash
    names = [n for _, ns in SECTIONS.values() for n in ns]
    assert len(names) == len(set(names))
    assert all(setting_parameter(n) is not None for n in names)


def test_the_run_tables_engine_choices_are_the_registered_engines():
    from fedlab_widgets.config import ENGINE_NAMES, run_parameter
    from fedlab_widgets.engines import ENGINES
    from fedlab_widgets.models import MODELS, TRAINABLE_MODELS

    assert ENGINE_NAMES == ("auto", *ENGINES) == run_parameter("engine").choices
    assert set(TRAINABLE_MODELS) <= set(MODELS) and "lenet" not in TRAINABLE_MODELS
