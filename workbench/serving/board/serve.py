"""``workbench board``: one MLflow tracking server on PostgreSQL for a lab or a class, and the
Optuna storage its search workers share, in the foreground until Ctrl-C or SIGTERM.

The database is either a private PostgreSQL server the board runs in a data folder
(``--data DIR``: :mod:`workbench.serving.board.local_postgres`) or an existing one
(``--database-url``, ``--database-url-file`` or ``WORKBENCH_DATABASE_URL``). MLflow and
Optuna get two databases on that server: both keep their schema version in a table named
``alembic_version``, so one database cannot hold both. Artifacts go to a folder the
tracking server serves (students need no shared filesystem).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from workbench.serving.board.database import (
    check_reachable,
    ensure_database,
    from_sources,
    require_driver,
)
from workbench.serving.servers import ManagedServer, mlflow_server, serve_in_foreground
from workbench.spec.errors import WorkbenchError

# The databases of a board's own server; on an existing server, the URL's database holds
# MLflow's tables and "<name>_optuna" Optuna's.
MLFLOW_DATABASE = "mlflow"
OPTUNA_DATABASE = "optuna"
OPTUNA_SUFFIX = "_optuna"
# MLflow creates its ~40 migrations' worth of tables on a new database before it answers.
MLFLOW_STARTUP_TIMEOUT_S = 300.0
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _shown_host(host: str, connect_host: str) -> str:
    """The host others use: this machine's name when bound to every interface."""
    return socket.gethostname() if host in WILDCARD_HOSTS else connect_host


def _allowed_hosts() -> list[str]:
    """MLflow's default Host headers (localhost, private addresses) plus this machine's name,
    which the board prints for students when it serves every interface."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    name = socket.gethostname()
    return [*get_default_allowed_hosts(), name, f"{name}:*"]


class Board:
    """What one board serves: its database servers (if it runs one), the two databases, and
    the MLflow server; built from the command's options, started by :func:`run_board`."""

    def __init__(self, args):
        local = args.data is not None
        if local and (args.database_url or args.database_url_file):
            raise WorkbenchError(
                "give the board one database: --data DIR (a PostgreSQL server it "
                "runs) or --database-url / --database-url-file (an existing one)"
            )
        given = None if local else from_sources(args.database_url, args.database_url_file)
        if not local and given is None:
            raise WorkbenchError(
                "the board needs a database: --data DIR (a PostgreSQL server it "
                "runs there) or an existing one's URL (--database-url-file FILE, "
                "or the environment variable WORKBENCH_DATABASE_URL)"
            )
        if args.database_url and given.password:
            print(
                "warning: a password on the command line is visible to other users of this "
                "machine; prefer WORKBENCH_DATABASE_URL or --database-url-file",
                flush=True,
            )
        require_driver()
        if args.workers < 1:
            raise WorkbenchError(
                f"--workers {args.workers}: the tracking server needs at least 1 worker"
            )
        if args.artifacts is None and not local:
            raise WorkbenchError(
                "--artifacts DIR is needed with an existing database: the folder "
                "the tracking server keeps (and serves) the runs' artifacts in"
            )
        self.serve_artifacts = args.serve_artifacts
        self.folder = Path(args.data).expanduser().resolve() if local else None
        artifacts = (
            Path(args.artifacts).expanduser() if args.artifacts else self.folder / "artifacts"
        )
        self.artifacts = artifacts.resolve()
        self.behind: list[ManagedServer] = []
        self.cluster = None
        if local:
            from workbench.serving.board.local_postgres import LocalCluster

            self.cluster = LocalCluster(self.folder, args.run_as)
            postgres = self.cluster.server(args.db_host, args.db_port)
            postgres.check_port()
            self.behind.append(postgres)
            self.admin = self.cluster.admin(postgres)
            self.mlflow_db = self.admin.sibling(MLFLOW_DATABASE)
            self.optuna_db = self.admin.sibling(OPTUNA_DATABASE)
            shown = _shown_host(args.db_host, postgres.connect_host)
        else:
            self.admin = self.mlflow_db = given
            self.optuna_db = given.sibling(given.name + OPTUNA_SUFFIX)
            shown = given.url.host or "localhost"
        self.storage = self.optuna_db.url.set(host=shown)
        self.server = self._mlflow(args)
        self.server.check_port()  # both ports before initdb, so a busy one is answered at once
        if self.cluster is not None:
            self.cluster.prepare()
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkbenchError(
                f"--artifacts {self.artifacts}: cannot create it ({err.strerror}); "
                "choose a writable folder"
            ) from None

    def _mlflow(self, args) -> ManagedServer:
        if self.serve_artifacts:
            options = ["--serve-artifacts", "--artifacts-destination", str(self.artifacts)]
        else:  # clients write artifacts to this folder themselves: it must be shared with them
            options = ["--no-serve-artifacts", "--default-artifact-root", str(self.artifacts)]
        if args.host in WILDCARD_HOSTS:
            options += ["--allowed-hosts", ",".join(_allowed_hosts())]
        log = self.folder / "mlflow.log" if self.folder else None
        env = {**os.environ, **self.mlflow_db.client_env()}
        return mlflow_server(
            "MLflow tracking server",
            self.mlflow_db.plain_url(),
            host=args.host,
            port=args.port,
            options=options,
            workers=args.workers,
            env=env,
            log_path=log,
            startup_timeout=MLFLOW_STARTUP_TIMEOUT_S,
        )

    def prepare_databases(self) -> None:
        """Once the database server answers: both databases exist."""
        check_reachable(self.admin)
        for db in (self.mlflow_db, self.optuna_db):
            ensure_database(self.admin, db.name)

    def password_hint(self) -> str:
        if self.cluster is not None:
            return f"export PGPASSFILE={self.cluster.passfile}  (a copy of that file, mode 600)"
        return "export PGPASSWORD=... (the database password), or a PGPASSFILE"

    def announce(self, server: ManagedServer) -> None:
        tracking = server.url
        if server.host in WILDCARD_HOSTS:
            tracking = f"http://{_shown_host(server.host, server.connect_host)}:{server.port}"
        storage = self.storage.render_as_string(hide_password=False)
        lines = [
            "board ready; Ctrl-C stops it",
            f"  students and workers:  export MLFLOW_TRACKING_URI={tracking}",
            f"  search workers:        workbench search SPEC.yaml --storage {storage}",
            f"    with the password:   {self.password_hint()}",
            f"  MLflow database:       {self.mlflow_db.masked_url()}",
            f"  Optuna database:       {self.optuna_db.masked_url()}",
            f"  artifacts:             {self.artifacts}"
            + (
                " (served through the tracking server)"
                if self.serve_artifacts
                else " (clients write here: share this folder)"
            ),
        ]
        if self.cluster is not None:
            lines.append(
                f"  data (back it up):     {self.folder}  (logs: postgres.log, mlflow.log)"
            )
        else:
            lines.append(f"  server log:            {server.log_path}")
        print("\n".join(lines), flush=True)


def run_board(args) -> int:
    board = Board(args)
    where = f"PostgreSQL in {board.cluster.pgdata}" if board.cluster else board.admin.masked_url()
    print(f"starting the board on {where} ...", flush=True)
    code = serve_in_foreground(
        board.server, on_ready=board.announce, behind=board.behind, prepare=board.prepare_databases
    )
    if code == 0:
        print("board stopped", flush=True)
    return code
