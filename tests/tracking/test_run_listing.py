"""Finding and watching runs: `workbench runs`, `status` and `front` on a store holding
finished, running, killed and failed runs, and two sweeps with the same point labels."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ROOT, fast_spec, own_store
from workbench import tracking
from workbench.cli.main import main
from workbench.running import liveness
from workbench.spec import mlflow_names
from workbench.spec.run_spec import RunSpec
from workbench.tracking import run_listing


def _make_run(
    client,
    status: str,
    steps_done: int,
    *,
    name: str,
    experiment: str = "listing",
    parent: str | None = None,
    objectives: dict | None = None,
    step_s: float = 2.0,
    kind: str | None = None,
) -> str:
    spec = RunSpec.parse(fast_spec(tracking={"experiment": experiment, "run_name": name}))
    run_id = tracking.start_run(
        client, spec, parent_run_id=parent, extra_tags={"workbench.kind": kind} if kind else None
    )
    for step in range(1, steps_done + 1):
        client.log_metric(run_id, "train/loss", 1.0 / step, step=step)
        client.log_metric(run_id, "perf/step_s", step_s, step=step)
    for key, value in (objectives or {}).items():
        client.log_metric(run_id, f"objective/{key}", value, step=steps_done)
    if status == "RUNNING":
        # Its process is this test's: alive on this host, so nothing reaps it.
        for key, value in liveness.process_tags().items():
            client.set_tag(run_id, key, value)
    elif status == "FAILED":
        tracking.end_run(client, run_id, "FAILED", "RunFailed: loss is nan at step 2")
    else:
        tracking.end_run(client, run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (opening a fresh sqlite store takes seconds)."""
    with own_store(tmp_path_factory, "listing-store") as uri:
        client = tracking.connect(uri)
        ids = {
            "finished": _make_run(
                client, "FINISHED", 10, name="done", objectives={"correctness": 0.9, "length": 5.0}
            ),
            "running": _make_run(client, "RUNNING", 4, name="going"),
            "killed": _make_run(client, "KILLED", 6, name="stopped"),
            "failed": _make_run(client, "FAILED", 2, name="broke"),
        }
        _make_run(client, "FINISHED", 3, name="elsewhere", experiment="other")
        yield client, ids


def _table(out: str) -> dict[str, dict[str, str]]:
    """Rows of a printed table keyed by their run id, split on the header's column starts."""
    lines = out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run_id"))
    names = lines[header].split()
    starts = [lines[header].index(n) for n in names]
    rows = {}
    for line in lines[header + 2 :]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows[cells[0]] = dict(zip(names, cells))
    return rows


def test_runs_lists_id_name_status_step_of_total_objectives_and_parent(store, capsys):
    client, ids = store
    assert main(["runs", "--experiment", "listing"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "run_id",
        "name",
        "status",
        "step",
        "objectives",
        "parent",
    ]
    rows = _table(out)
    assert list(rows) == [
        ids["finished"],
        ids["running"],
        ids["killed"],
        ids["failed"],
    ]  # oldest first
    expect = {
        "finished": ("done", "FINISHED", "10/10", "correctness=0.9, length=5"),
        "running": ("going", "RUNNING", "4/10", "-"),
        "killed": ("stopped", "KILLED", "6/10", "-"),
        "failed": ("broke", "FAILED", "2/10", "-"),
    }
    for key, (name, status, step, objectives) in expect.items():
        row = rows[ids[key]]
        assert (row["name"], row["status"], row["step"], row["objectives"], row["parent"]) == (
            name,
            status,
            step,
            objectives,
            "-",
        )


def test_runs_of_every_experiment_say_which(store, capsys):
    assert main(["runs"]) == 0
    rows = _table(capsys.readouterr().out)
    experiments = [r["experiment"] for r in rows.values()]
    assert experiments.count("listing") == 4 and experiments.count("other") == 1


@pytest.mark.parametrize(
    "command", [["runs", "--experiment", "nope"], ["front", "--experiment", "nope"]]
)
def test_an_unknown_experiment_lists_the_existing_ones(store, capsys, command):
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err
    assert "its experiments: " in err and "listing, other" in err


def test_status_shows_step_of_total_last_loss_and_eta(store, capsys):
    client, ids = store
    assert main(["status", ids["running"]]) == 0
    out = capsys.readouterr().out
    assert f"run {ids['running']} (going, experiment 'listing'): RUNNING" in out
    # 4 of 10 steps at perf/step_s = 2 s: 6 steps, 12 s left.
    assert "step 4/10, last loss 0.25, 2 s/step" in out
    assert "ETA 12 s" in out


def test_status_of_ended_runs_has_no_eta_and_a_failure_says_why(store, capsys):
    client, ids = store
    assert main(["status", ids["finished"]]) == 0
    out = capsys.readouterr().out
    assert ": FINISHED" in out and "step 10/10, last loss 0.1" in out and "ETA" not in out
    assert "objectives: correctness=0.9, length=5" in out
    assert main(["status", ids["failed"]]) == 0
    out = capsys.readouterr().out
    assert ": FAILED" in out and "step 2/10" in out
    assert "error: RunFailed: loss is nan at step 2" in out


def test_run_progress_eta_from_elapsed_time_without_step_times(store):
    client, _ = store
    spec = RunSpec.parse(fast_spec(tracking={"experiment": "eta"}))
    run_id = tracking.start_run(client, spec)
    client.log_metric(run_id, "train/loss", 0.5, step=5)
    start = client.get_run(run_id).info.start_time / 1000.0
    progress = run_listing.run_progress(client, run_id, now=start + 20.0)
    assert progress.step_s == pytest.approx(4.0)  # 20 s elapsed over 5 steps
    assert progress.eta_s == pytest.approx(20.0)  # 5 steps left


def test_front_groups_repeated_sweeps_by_parent_and_shows_run_ids(store, capsys, tmp_path):
    client, _ = store
    children = {}
    for sweep in ("first", "second"):
        parent = _make_run(
            client, "FINISHED", 0, name=f"sweep-{sweep}", experiment="sweeps", kind="sweep"
        )
        points = ((0.2, 3.0), (0.9, 11.0)) if sweep == "first" else ((0.5, 6.0), (0.95, 12.0))
        for w, point in zip(("0.1", "0.9"), points):
            children[(sweep, w)] = _make_run(
                client,
                "FINISHED",
                10,
                name=f"correctness={w}",
                experiment="sweeps",
                parent=parent,
                objectives={"correctness": point[0], "length": point[1]},
            )
        children[sweep] = parent
    assert main(["front", "--experiment", "sweeps", "--html", str(tmp_path / "front.html")]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "correctness=" in line]
    assert out.splitlines()[0].split() == ["sweep", "label", "correctness", "length", "run_id"]
    # Every point of both sweeps is on this front (each trades correctness for length).
    assert len(lines) == 4
    first, second = children["first"][:8], children["second"][:8]
    assert [line.split()[:2] for line in lines] == [
        ["sweep-first", first],
        ["sweep-first", first],
        ["sweep-second", second],
        ["sweep-second", second],
    ]
    for (sweep, w), run_id in ((k, v) for k, v in children.items() if isinstance(k, tuple)):
        assert any(
            run_id in line and f"correctness={w}" in line and f"sweep-{sweep}" in line
            for line in lines
        )


# -- ids by prefix, the runs in progress, and the fast reader --------------------------------


def test_status_takes_the_first_characters_of_a_run_id(store, capsys):
    client, ids = store
    assert main(["status", ids["finished"][:8]]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"run {ids['finished']} (done, experiment 'listing'): FINISHED"


def test_an_ambiguous_prefix_lists_the_runs_it_matches(store, capsys):
    client, ids = store
    assert main(["status", ""]) == 2
    assert capsys.readouterr().err == (
        "error: give a run id (or its first characters); `workbench runs` lists them\n"
    )
    first = ids["finished"][0]

    def matching():
        return [
            r for r in run_listing.list_runs(run_listing.open_store()) if r.run_id.startswith(first)
        ]

    while len(matching()) < 2:  # ids are random: add runs until a second one shares the character
        _make_run(client, "FINISHED", 1, name="twin", experiment="twins")
    assert main(["status", first]) == 2
    lines = [
        f"  {r.run_id}  {r.name} (experiment '{r.experiment}', {r.status})" for r in matching()
    ]
    assert capsys.readouterr().err == (
        f"error: {len(lines)} runs have ids starting with '{first}'; give more characters of "
        "the id:\n" + "\n".join(lines) + "\n"
    )


def test_an_unknown_prefix_says_where_it_looked_and_how_to_list_runs(store, capsys):
    assert main(["status", "zz"]) == 2
    uri = run_listing.open_store().tracking_uri
    assert capsys.readouterr().err == (
        f"error: no run whose id starts with 'zz' in the store {uri}; `workbench runs` lists the "
        "runs and their ids (another store? MLFLOW_TRACKING_URI picks it)\n"
    )


def test_status_without_an_id_shows_the_runs_in_progress(store, capsys):
    client, ids = store
    assert main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    running = run_listing.list_runs(run_listing.open_store(), status="RUNNING")
    assert ids["running"] in [r.run_id for r in running]  # and a run of the ETA test above
    assert out[0] == f"runs in progress: {len(running)}"
    assert out[1].split() == ["run_id", "name", "experiment", "step", "last", "loss", "ETA"]
    # 4 of 10 steps at perf/step_s = 2 s: 12 s left.
    row = next(line for line in out if line.startswith(ids["running"]))
    assert row.split() == [ids["running"], "going", "listing", "4/10", "0.25", "12", "s"]
    assert (
        out[-1]
        == "`workbench status RUN_ID` shows one run (the first characters of its id are enough)"
    )


def test_status_without_an_id_says_when_nothing_runs(store_uri, capsys):
    client = tracking.connect()
    _make_run(client, "FINISHED", 2, name="over")
    assert main(["status"]) == 0
    assert capsys.readouterr().out == (
        f"no runs in progress in {store_uri}; `workbench runs` lists every run\n"
    )


def test_a_run_whose_process_is_gone_is_ended_when_runs_are_listed(store_uri, capsys):
    import subprocess
    import sys

    client = tracking.connect()
    run_id = _make_run(client, "RUNNING", 2, name="orphan")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    tags = liveness.process_tags(gone.pid)
    gone.wait()  # the pid now names no process: the run's process is gone for certain
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"note: run {run_id} had died without ending; it is now FAILED"
    assert _table(out)[run_id]["status"] == "FAILED"


def test_the_sqlite_reader_and_mlflows_client_read_the_same_runs(store):
    client, ids = store
    fast = run_listing.open_store()
    assert isinstance(fast, run_listing.SqliteStore)
    slow = run_listing.ClientStore(client)
    assert fast.experiments() == slow.experiments()
    assert fast.runs() == slow.runs()
    assert fast.runs(status="RUNNING") == slow.runs(status="RUNNING")
    for prefix in (ids["killed"][:6], ids["killed"], "0" * 32):
        assert fast.runs(id_prefix=prefix) == slow.runs(id_prefix=prefix)
    assert run_listing.run_records(fast, "listing") == tracking.runs_frame(
        client, "listing", status=None
    )


def test_status_of_a_run_loading_its_base_says_what_it_is_doing(store_uri, capsys):
    client = tracking.connect()
    run_id = _make_run(client, "RUNNING", 0, name="loading")
    client.set_tag(run_id, mlflow_names.PHASE_TAG, "pretraining step 160/800  loss 2.9")
    assert main(["status", run_id[:8]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run {run_id} (loading, experiment 'listing'): RUNNING"
    assert out[1].startswith("step 0/10, last loss -, - s/step, elapsed ")
    assert out[2] == "now: pretraining step 160/800  loss 2.9"


def test_listing_a_store_imports_neither_mlflow_nor_torch(store, tmp_path):
    """What keeps `runs`, `status` and `front` at a fraction of a second: MLflow alone takes
    seconds to import. (Here the one RUNNING run has a fresh heartbeat, so no reaper is needed.)"""
    import subprocess
    import sys

    client, ids = store
    running = [r.run_id for r in run_listing.list_runs(client, status="RUNNING")]
    for run_id in running:
        client.set_tag(run_id, mlflow_names.HEARTBEAT_TAG, f"{time.time():.3f}")
    try:
        code = (
            "import sys; from workbench.cli.main import main; "
            "assert main(['runs']) == 0 and main(['status']) == 0 and "
            f"main(['status', '{ids['finished'][:8]}']) == 0 and "
            "main(['front', '--experiment', 'listing', "
            f"'--html', {str(tmp_path / 'f.html')!r}]) == 0; "
            "heavy = sorted(m for m in ('mlflow', 'torch', 'lightning', 'sqlalchemy') "
            "if m in sys.modules); "
            "print('imported:', heavy)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
    finally:
        for run_id in running:
            client.delete_tag(run_id, mlflow_names.HEARTBEAT_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "imported: []"


@pytest.mark.slow
def test_the_listing_benchmark_runs_quick_and_ends_with_its_headline_figures():
    import re
    import subprocess
    import sys

    root = ROOT
    # About 40 s on 2 idle cores (a 20-run store, 14 commands); 600 s for a loaded machine.
    result = subprocess.run(
        [sys.executable, "benchmarks/cli_listing.py", "--quick"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("workbench status PREFIX (running)") for line in lines), (
        result.stdout
    )
    assert not any("fails (" in line for line in lines), result.stdout
    tail = [re.match(r"^BENCH (\S+) (\d+\.\d+) s target=<=1\.5$", line) for line in lines[-3:]]
    assert all(tail), lines[-3:]
    assert [m[1] for m in tail] == ["cli_status_s", "cli_front_s", "cli_runs_s"]


def test_the_explorers_reader_gives_what_mlflows_client_gives(store):
    """The finished runs the ParetoExplorer reads (the sqlite reader, no MLflow), against
    ``tracking.runs_frame`` over MLflow's client: the whole experiment, one sweep's children,
    and an experiment the store does not have. (Last in the file: it adds an experiment.)"""
    client, _ = store
    parent = _make_run(client, "FINISHED", 0, name="sweep", experiment="family", kind="sweep")
    _make_run(client, "FINISHED", 3, name="child-a", experiment="family", parent=parent,
              objectives={"correctness": 0.5})  # fmt: skip
    _make_run(client, "FAILED", 2, name="child-b", experiment="family", parent=parent)
    _make_run(client, "FINISHED", 3, name="child-c", experiment="family", parent=parent,
              objectives={"correctness": 0.7})  # fmt: skip
    _make_run(client, "FINISHED", 3, name="alone", experiment="family")
    fast = run_listing.open_store()
    assert isinstance(fast, run_listing.SqliteStore)
    whole = run_listing.finished_run_records(fast, "family")
    assert [r["run_name"] for r in whole] == ["sweep", "child-a", "child-c", "alone"]
    assert whole == tracking.runs_frame(client, "family")
    children = run_listing.children(whole, parent)
    assert [r["run_name"] for r in children] == ["child-a", "child-c"]
    assert children == tracking.runs_frame(client, "family", parent_run_id=parent)
    assert children[1]["objectives"] == {"correctness": 0.7}
    assert run_listing.finished_run_records(fast, "nope") == []
    assert tracking.runs_frame(client, "nope") == []
