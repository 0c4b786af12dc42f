"""`workbench board` on a real PostgreSQL server in a temporary data folder: the URLs it prints
(never a password), a run stored in PostgreSQL, an Optuna search of 4 worker processes on
its storage, the quick load benchmark, and SIGTERM leaving nothing behind.

One board serves the whole module (starting one costs 20-50 s on 2 cores: initdb, then
MLflow creating its tables); the SIGTERM test stops it, so it comes last. PostgreSQL's
binaries and psycopg2 are required: without them these tests fail saying what to install
(scripts/setup.sh dev installs both).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, fast_spec, run_cli, wait_until
from workbench.serving.servers import free_port, port_is_free

# Measured: 20-50 s from start to "board ready" on 2 cores loaded by other work; wide margin.
READY_S = 300
STOP_S = 120


def _require_postgres() -> None:
    """Fail (not skip) naming what to install when the board cannot run here."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail(
            "psycopg2 is not installed: pip install -e '.[board]' "
            "(scripts/setup.sh dev installs it)"
        )
    from workbench.serving.board.local_postgres import bin_dir
    from workbench.spec.errors import WorkbenchError

    try:
        bin_dir()
    except WorkbenchError as err:
        pytest.fail(f"the board tests need PostgreSQL: {err}")


@dataclass
class RunningBoard:
    process: subprocess.Popen
    output: Path
    folder: Path
    tracking_uri: str
    storage: str
    password: str
    pids: set[int] = field(default_factory=set)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def connect(self, database: str):
        """psycopg2 to one of the board's databases, as its superuser."""
        import psycopg2

        found = re.match(r"postgresql\+psycopg2://(\w+)@([\d.]+):(\d+)/", self.storage)
        user, host, port = found.groups()
        connection = psycopg2.connect(
            host=host,
            port=int(port),
            user=user,
            dbname=database,
            passfile=str(self.folder / "pgpass"),
            connect_timeout=10,
        )
        connection.autocommit = True
        return connection

    def query(self, database: str, sql: str, *params) -> list[tuple]:
        with (
            contextlib.closing(self.connect(database)) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []  # none from a statement


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PGPASSWORD", "PGPASSFILE", "WORKBENCH_DATABASE_URL")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def board():
    _require_postgres()
    # The system's temp folder, not pytest's (mode 700): run as root, the board runs PostgreSQL
    # as the unprivileged 'postgres' user, which must reach the data folder.
    folder = Path(tempfile.mkdtemp(prefix="workbench-board-test-"))
    folder.chmod(0o755)
    output = folder / "board.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workbench.cli",
                "board",
                "--data",
                str(folder / "data"),
                "--port",
                "0",
                "--db-port",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_clean_env(),
        )
    pids: set[int] = set()
    try:
        text = wait_until(
            lambda: _ready_or_exited(output, process), READY_S, "the board's URLs printed"
        )
        assert "board ready" in text, text
        tracking = re.search(r"MLFLOW_TRACKING_URI=(http://127\.0\.0\.1:\d+)", text)[1]
        storage = re.search(r"--storage (postgresql\+psycopg2://\S+)", text)[1]
        password = (folder / "data" / "pgpass").read_text().strip().rsplit(":", 1)[1]
        pids = {process.pid} | {c.pid for c in psutil.Process(process.pid).children(recursive=True)}
        yield RunningBoard(process, output, folder / "data", tracking, storage, password, pids)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_S)
        for pid in pids:  # whatever a failed stop left, by PID
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        shutil.rmtree(folder, ignore_errors=True)


def _ready_or_exited(output: Path, process: subprocess.Popen) -> str | None:
    text = output.read_text(errors="replace")
    if "board ready" in text and "Optuna database" in text and "data (back it up)" in text:
        return text
    return text or "(no output)" if process.poll() is not None else None


@pytest.fixture(scope="module")
def fast_base():
    """The fast tiny base, built once here so that the search's workers only load it."""
    from workbench.models.tiny import build_or_load
    from workbench.spec.run_spec import RunSpec

    build_or_load(RunSpec.parse(fast_spec()).model.tiny, log=lambda *a: None)


# --------------------------------------------------------------------------- tests


def test_the_board_prints_what_students_and_workers_set_and_never_the_password(board):
    text = board.text()
    with urllib.request.urlopen(board.tracking_uri + "/health", timeout=10) as response:
        assert response.status == 200
    assert f"export MLFLOW_TRACKING_URI={board.tracking_uri}" in text
    assert re.search(
        r"--storage postgresql\+psycopg2://workbench@127\.0\.0\.1:\d+/optuna$", text, re.M
    ), text
    assert f"PGPASSFILE={board.folder / 'pgpass'}" in text
    assert re.search(r"MLflow database: +postgresql\+psycopg2://workbench:\*\*\*@", text), text
    assert (board.folder / "pgpass").stat().st_mode & 0o777 == 0o600
    assert len(board.password) >= 20
    for log in (board.output, board.folder / "mlflow.log", board.folder / "postgres.log"):
        assert board.password not in log.read_text(errors="replace"), log


def test_a_run_logged_against_the_board_is_stored_in_postgresql(board, tmp_path):
    from mlflow.entities import Metric

    client = MlflowClient(board.tracking_uri)
    experiment = client.create_experiment("board-run")
    run = client.create_run(experiment, run_name="stored in postgres")
    run_id = run.info.run_id
    client.log_batch(run_id, metrics=[Metric("train/loss", 1.0 / (s + 1), 0, s) for s in range(5)])
    (tmp_path / "note.txt").write_text("served artifact")
    client.log_artifact(run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run_id, "FINISHED")

    # In PostgreSQL itself: the run, its status and its five points.
    rows = board.query("mlflow", "SELECT name, status FROM runs WHERE run_uuid = %s", run_id)
    assert rows == [("stored in postgres", "FINISHED")]
    steps = board.query(
        "mlflow",
        "SELECT step FROM metrics WHERE run_uuid = %s AND key = %s ORDER BY step",
        run_id,
        "train/loss",
    )
    assert [s for (s,) in steps] == [0, 1, 2, 3, 4]
    # The artifact went through the tracking server into the board's folder.
    stored = list((board.folder / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "served artifact"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")


def _study_file(folder: Path, experiment: str) -> Path:
    spec = fast_spec(
        method="mo-sft",
        adapter={"name": "lora", "r": 4},
        train={"steps": 2, "eval_every": 2, "batch_size": 8, "log_every": 1},
        tracking={"experiment": experiment, "log_model": False},
    )
    spec["search"] = {
        "space": {
            "adapter.r": {"choices": [2, 4, 8]},
            "optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True},
        },
        "pruning": "none",
        "study": "board-study",
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(spec))
    return folder / "study.yaml"


def test_a_search_with_4_workers_on_the_board_storage_runs_every_trial_once(
    board, fast_base, tmp_path
):
    trials = 4  # one per worker: the workers' imports, not the trials, are what costs here
    study = _study_file(tmp_path, "board-search")
    env = {
        **_clean_env(),
        "MLFLOW_TRACKING_URI": board.tracking_uri,
        "PGPASSFILE": str(board.folder / "pgpass"),
    }
    result = run_cli(
        "search",
        str(study),
        "--trials",
        str(trials),
        "--workers",
        "4",
        "--storage",
        board.storage,
        "--no-progress",
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert board.password not in result.stdout + result.stderr
    # The trials' table marks the front (a front always has a point): the rows end in '*'.
    assert any(line.rstrip().endswith("*") for line in result.stdout.splitlines()), result.stdout

    # In the Optuna database: every trial number once, each COMPLETE, none RUNNING.
    rows = board.query(
        "optuna",
        "SELECT t.number, t.state FROM trials t JOIN studies s "
        "ON s.study_id = t.study_id WHERE s.study_name = %s",
        "board-study",
    )
    numbers = sorted(n for n, _ in rows)
    assert numbers == list(range(trials)), rows
    assert {state for _, state in rows} == {"COMPLETE"}, rows
    # Four worker processes shared them.
    pids = board.query(
        "optuna",
        "SELECT DISTINCT a.value_json FROM trial_user_attributes a "
        "JOIN trials t ON t.trial_id = a.trial_id WHERE a.key = 'worker_process'",
    )
    assert len(pids) == 4, pids
    # In MLflow (on the board): one FINISHED run per trial under the study's parent, none RUNNING.
    statuses = board.query(
        "mlflow",
        "SELECT r.status, count(*) FROM runs r JOIN experiments e "
        "ON e.experiment_id = r.experiment_id WHERE e.name = %s GROUP BY r.status",
        "board-search",
    )
    assert dict(statuses) == {"FINISHED": trials + 1}, statuses
    # Two databases: MLflow's and Optuna's tables apart (both keep an alembic_version table).
    tables = {
        db: {
            t
            for (t,) in board.query(
                db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        for db in ("mlflow", "optuna")
    }
    assert {"runs", "metrics", "alembic_version"} <= tables["mlflow"] and "trials" not in tables[
        "mlflow"
    ]
    assert {"studies", "trials", "alembic_version"} <= tables["optuna"] and "runs" not in tables[
        "optuna"
    ]


def test_the_storage_without_its_password_is_an_error_naming_the_url_and_the_fix(
    board, monkeypatch
):
    from workbench.spec.errors import WorkbenchError
    from workbench.studies.search.study import open_storage

    for name in ("PGPASSFILE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(board.folder / "nowhere"))  # no ~/.pgpass either
    with pytest.raises(WorkbenchError) as raised:
        open_storage(board.storage)
    message = str(raised.value)
    assert (
        message.startswith(f"cannot open the Optuna storage {board.storage}: ")
        and "\n" not in message
    )
    assert "PGPASSWORD or a PGPASSFILE" in message
    with_password = board.storage.replace("workbench@", f"workbench:{board.password}@")
    with pytest.raises(WorkbenchError) as raised:  # a wrong port: the password stays masked
        open_storage(re.sub(r":(\d+)/", f":{free_port()}/", with_password))
    assert board.password not in str(raised.value) and "workbench:***@" in str(raised.value)


def test_a_database_url_keeps_its_password_apart():
    from workbench.serving.board.database import Database

    db = Database.parse("postgres://teacher:s3cret@db.lab:5433/class?sslmode=require", "a test")
    for url in (db.plain_url(), db.sibling("class_optuna").plain_url()):
        assert "s3cret" not in url and url.startswith("postgresql+psycopg2://teacher@db.lab:5433/")
        assert url.endswith("?sslmode=require")
    assert db.masked_url() == "postgresql+psycopg2://teacher:***@db.lab:5433/class?sslmode=require"
    assert db.client_env() == {"PGPASSWORD": "s3cret"}
    assert "s3cret" not in repr(db)


def test_an_existing_server_from_the_environment_gets_an_optuna_database_and_no_password_shown(
    board, tmp_path, monkeypatch, capsys
):
    """The board over an existing PostgreSQL (here the module's), its URL with the password in
    WORKBENCH_DATABASE_URL: built and prepared in process, its MLflow server not started."""
    from workbench.cli.main import build_parser
    from workbench.serving.board.serve import Board

    port = int(re.search(r":(\d+)/optuna", board.storage)[1])
    board.query("postgres", "CREATE DATABASE class")
    monkeypatch.setenv(
        "WORKBENCH_DATABASE_URL", f"postgresql://workbench:{board.password}@127.0.0.1:{port}/class"
    )
    args = build_parser().parse_args(
        ["board", "--artifacts", str(tmp_path / "artifacts"), "--port", "0"]
    )
    existing = Board(args)
    existing.prepare_databases()
    existing.announce(existing.server)
    printed = capsys.readouterr().out
    assert board.query("postgres", "SELECT datname FROM pg_database WHERE datname = 'class_optuna'")
    assert f"--storage postgresql+psycopg2://workbench@127.0.0.1:{port}/class_optuna" in printed
    assert (
        f"MLflow database:       postgresql+psycopg2://workbench:***@127.0.0.1:{port}/class"
        in printed
    )
    # The MLflow server would get the password in its environment only, never as an argument.
    assert board.password not in printed + " ".join(existing.server._command)
    assert existing.server._env["PGPASSWORD"] == board.password


def test_the_quick_load_benchmark_stores_every_point_once(board):
    # The module's board (starting another costs ~half a minute); the sqlite side is left to
    # the full run, which BENCHMARKS.md records.
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "store_load.py"),
            "--quick",
            "--backends",
            "board",
            "--board-uri",
            board.tracking_uri,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=_clean_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = dict(re.findall(r"^BENCH (\S+) (\S+) ", result.stdout, re.M))
    assert figures["board_points_lost"] == "0", result.stdout[-3000:]
    assert figures["board_points_duplicated"] == "0", result.stdout[-3000:]
    assert figures["board_runs_left_running"] == "0", result.stdout[-3000:]
    for figure in ("points_wrong", "runs_wrong", "students_failed"):
        assert figures[f"board_{figure}"] == "0", result.stdout[-3000:]
    assert float(figures["board_batch_latency_p95_ms"]) > 0
    # 4 students x (a run + a sweep's parent and 6 children); 7 x 20 steps x 6 metrics each;
    # none lost, duplicated (the resumed run's replayed steps), wrong, no run wrong, no student
    # failed.
    assert re.search(r"^ +board +32/32 +0 +3360 +3360 +0 +0 +0 +0 +0 ", result.stdout, re.M), (
        result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the board needs a database: --data DIR"),
        (
            ["--database-url", "mysql://u@h/db", "--artifacts", "ART"],
            "a 'mysql' URL; the board needs PostgreSQL",
        ),
        (
            ["--database-url", "postgresql://u@127.0.0.1/", "--artifacts", "ART"],
            "the URL names no database",
        ),
        (
            ["--data", "DATA", "--database-url", "postgresql://u@h/db"],
            "give the board one database",
        ),
        (["--database-url-file", "MISSING"], "--database-url-file"),
        (["--database-url", "postgresql://u@127.0.0.1:1/db"], "--artifacts DIR is needed"),
        (
            ["--data", "DATA", "--workers", "0"],
            "--workers 0: the tracking server needs at least 1 worker",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_fix(args, message, tmp_path):
    args = [str(tmp_path / a) if a in ("ART", "DATA", "MISSING") else a for a in args]
    result = run_cli("board", *args, env={"WORKBENCH_DATABASE_URL": ""}, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, (
        result.stderr
    )
    assert message in result.stderr


def test_an_unreachable_database_is_named_with_its_password_masked(tmp_path):
    _require_postgres()
    closed = free_port()  # nothing listens there
    url_file = tmp_path / "db-url"
    url_file.write_text(
        f"# the class database\npostgresql://teacher:s3cret-Pw@127.0.0.1:{closed}/class\n"
    )
    result = run_cli(
        "board",
        "--database-url-file",
        str(url_file),
        "--artifacts",
        str(tmp_path / "a"),
        "--port",
        "0",
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"cannot reach the database postgresql+psycopg2://teacher:***@127.0.0.1:{closed}/class"
        in result.stderr
    )
    assert "s3cret-Pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_an_error_before_any_database_is_made(board, tmp_path):
    busy = int(board.tracking_uri.rsplit(":", 1)[1])
    db_port = int(re.search(r":(\d+)/optuna", board.storage)[1])
    for option, port in (("--port", busy), ("--db-port", db_port)):
        folder = tmp_path / option.strip("-")
        others = ["--port", "0"] if option == "--db-port" else []
        result = run_cli("board", "--data", str(folder), option, str(port), *others, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
        assert f"choose another with {option} N" in result.stderr
        assert not (folder / "pgdata" / "PG_VERSION").exists()


def test_sigterm_stops_postgres_and_mlflow_and_frees_the_ports(board):
    """Last: it stops the module's board."""
    tracking_port = int(board.tracking_uri.rsplit(":", 1)[1])
    db_port = int(re.search(r":(\d+)/optuna", board.storage)[1])
    postmaster = int((board.folder / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert postmaster in board.pids and len(board.pids) >= 4  # the board, postgres, mlflow, uvicorn
    board.process.send_signal(signal.SIGTERM)
    assert board.process.wait(timeout=STOP_S) == 0
    assert board.text().rstrip().endswith("board stopped"), board.text()[-2000:]
    assert "Traceback" not in board.text()

    def leftovers():
        alive = []
        for pid in board.pids - {board.process.pid}:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        for process in psutil.process_iter(["cmdline"]):
            if str(board.folder) in " ".join(process.info["cmdline"] or []):
                alive.append(process.pid)
        return alive

    # The stop waits for both servers: nothing should be left even a moment later.
    assert leftovers() == []
    assert not (board.folder / "pgdata" / "postmaster.pid").exists()  # a clean shutdown
    assert port_is_free("127.0.0.1", tracking_port) and port_is_free("127.0.0.1", db_port)
