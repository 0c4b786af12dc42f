"""A private PostgreSQL server in a data folder: created with ``initdb`` on first use, then
run in the foreground under a :class:`~workbench.serving.servers.ManagedServer` (so it is one
process group that the board ends with everything else) and stopped with
``pg_ctl stop -m fast``.

The folder holds::

    DIR/pgdata/        the cluster (PGDATA; its unix socket lives here too)
    DIR/pgpass         the superuser's password, as a libpq password file (mode 600)
    DIR/postgres.log   the server's output

PostgreSQL refuses to run as root. Run as root, the board runs initdb, postgres and pg_ctl
as an unprivileged user (``postgres`` by default, which Debian's package creates) through
``setpriv``, and gives that user the cluster folder; run as anyone else, it runs them as
itself. Why not ``pg_ctl start``: it detaches the server into a session of its own, out of
reach of the process-group stop that every server of the workbench gets.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from workbench.serving.board.database import Database, answers, write_passfile
from workbench.serving.servers import ManagedServer
from workbench.spec.errors import WorkbenchError

SUPERUSER = "workbench"
DEFAULT_RUN_AS = "postgres"
# Where Debian's package puts the binaries (not on PATH): /usr/lib/postgresql/<major>/bin.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_POSTGRES = (
    "install PostgreSQL (Debian: apt-get install postgresql; scripts/setup.sh dev "
    "does it as root) or put its bin folder on PATH"
)
STARTUP_TIMEOUT_S = 120.0  # a fresh cluster answers in ~1 s on 2 idle cores


def bin_dir() -> Path:
    """The folder of ``initdb``, ``postgres`` and ``pg_ctl``: PATH's, else Debian's newest."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    folders = sorted(
        Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)],
    )
    for folder in reversed(folders):
        if (folder / "initdb").is_file():
            return folder
    raise WorkbenchError(f"PostgreSQL's initdb was not found: {INSTALL_POSTGRES}")


def run_as_prefix(user: str) -> list[str]:
    """The command prefix that runs a PostgreSQL program as ``user`` when this process is root
    (PostgreSQL refuses root); nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise WorkbenchError(
            f"running as root: PostgreSQL refuses root, and there is no user "
            f"{user!r} to run it as; {INSTALL_POSTGRES} (its package creates the "
            "user 'postgres'), or name an unprivileged user with --run-as"
        ) from None
    if account.pw_uid == 0:
        raise WorkbenchError(
            f"--run-as {user}: that is root, which PostgreSQL refuses; name an unprivileged user"
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise WorkbenchError(
            "running as root needs setpriv (util-linux) to run PostgreSQL as "
            f"{user!r}: install util-linux, or run the board as that user"
        )
    return [
        setpriv,
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
    ]


class LocalCluster:
    """The data folder of a private PostgreSQL server, and how to run it."""

    def __init__(self, folder: str | os.PathLike, run_as: str = DEFAULT_RUN_AS):
        self.folder = Path(folder).expanduser().resolve()
        self.pgdata = self.folder / "pgdata"
        self.passfile = self.folder / "pgpass"
        self.log_path = self.folder / "postgres.log"
        self.run_as = run_as
        self.bin = bin_dir()
        self.prefix = run_as_prefix(run_as)

    def _owner(self) -> tuple[int, int] | None:
        if not self.prefix:
            return None
        account = pwd.getpwnam(self.run_as)
        return account.pw_uid, account.pw_gid

    def prepare(self) -> None:
        """Create the cluster on first use (a fresh superuser password in DIR/pgpass); check an
        existing one is whole. Problems are WorkbenchErrors that say what to do."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise WorkbenchError(
                f"--data {self.folder}: cannot create it ({err.strerror}); choose a writable folder"
            ) from None
        initialised = (self.pgdata / "PG_VERSION").is_file()
        if initialised and not self.passfile.is_file():
            raise WorkbenchError(
                f"{self.pgdata} holds a database but its password file "
                f"{self.passfile} is missing; restore it from the backup of this "
                "folder (or start with an empty --data folder)"
            )
        if not initialised and any(self.pgdata.iterdir()):
            raise WorkbenchError(
                f"{self.pgdata} is neither empty nor a PostgreSQL cluster; "
                "give --data a new or empty folder, or one the board created"
            )
        owner = self._owner()
        if owner is not None and not initialised:
            os.chown(self.pgdata, *owner)
        self._check_reachable()
        if not initialised:
            self._initdb(owner)

    def _check_reachable(self) -> None:
        if subprocess.run([*self.prefix, "test", "-w", str(self.pgdata)]).returncode != 0:
            who = f"user {self.run_as!r}" if self.prefix else "this user"
            raise WorkbenchError(
                f"{who} cannot write {self.pgdata} (a folder above it is closed "
                "to it, e.g. mode 700); choose a --data folder it can reach, or "
                "open the folders above it (chmod o+x)"
            )

    def _initdb(self, owner: tuple[int, int] | None) -> None:
        password = secrets.token_urlsafe(24)
        # initdb reads the password from a file only the server's user can read, removed after.
        secret = self.folder / ".initdb-password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        try:
            if owner is not None:
                os.chown(secret, *owner)
            result = subprocess.run(
                [
                    *self.prefix,
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={secret}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
        finally:
            secret.unlink(missing_ok=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
            raise WorkbenchError(f"initdb could not create the cluster in {self.pgdata}:\n{tail}")
        write_passfile(self.passfile, SUPERUSER, password)

    def admin(self, server: ManagedServer) -> Database:
        """The superuser's maintenance database on the running ``server``."""
        host = f"[{server.connect_host}]" if ":" in server.connect_host else server.connect_host
        return Database.parse(
            f"postgresql://{SUPERUSER}@{host}:{server.port}/postgres",
            "the cluster",
            passfile=self.passfile,
        )

    def server(self, host: str, port: int) -> ManagedServer:
        """The server, not started: on ``host``:``port`` (0: a free one), its socket in PGDATA."""
        command = [
            *self.prefix,
            str(self.bin / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            "{port}",
            "-k",
            str(self.pgdata),
            "-c",
            "listen_addresses={host}",
        ]
        stop = [
            *self.prefix,
            str(self.bin / "pg_ctl"),
            "stop",
            "-D",
            str(self.pgdata),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
        ]
        server = ManagedServer(
            "PostgreSQL",
            command,
            host=host,
            port=port,
            log_path=self.log_path,
            startup_timeout=STARTUP_TIMEOUT_S,
            stop_command=stop,
            ready_check=lambda: answers(self.admin(server)),
            port_option="--db-port",
        )
        return server
