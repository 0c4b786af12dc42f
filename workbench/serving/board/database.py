"""A PostgreSQL database the board uses: its URL with the password kept apart, where the URL
comes from (an option, a file, the environment), and the few statements the board runs.

The password never travels inside a URL that is printed, logged or put on a command line:
a :class:`Database` holds the URL without it, and hands the password to the servers and
clients it starts through libpq's own channels (``PGPASSWORD`` or a ``PGPASSFILE``), which
psycopg2, and so SQLAlchemy, MLflow and Optuna, read.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.spec.errors import WorkbenchError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DRIVER = "postgresql+psycopg2"  # what MLflow's and Optuna's SQLAlchemy URLs name
URL_ENV = "WORKBENCH_DATABASE_URL"
INSTALL_DRIVER = (
    "the PostgreSQL driver psycopg2 is not installed: "
    "pip install -e '.[board]' (scripts/setup.sh dev installs it too)"
)


def require_driver() -> None:
    """A WorkbenchError naming what to install when psycopg2 is missing."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise WorkbenchError(INSTALL_DRIVER) from None


@dataclass(frozen=True)
class Database:
    """One database on a PostgreSQL server. ``url`` has no password; ``password`` (or the
    passfile) is what clients get through the environment."""

    url: URL  # password removed
    password: str | None = field(default=None, repr=False)
    passfile: Path | None = None

    @classmethod
    def parse(cls, text: str, source: str, passfile: Path | None = None) -> Database:
        """``text`` (postgresql://user:password@host:port/name, any postgres scheme) as a
        Database; a bad URL is a WorkbenchError naming ``source``."""
        from sqlalchemy.engine import URL, make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(text.strip())
        except ArgumentError:
            raise WorkbenchError(
                f"{source}: not a database URL; expected "
                "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ) from None
        if url.get_backend_name() not in ("postgresql", "postgres"):
            raise WorkbenchError(
                f"{source}: a {url.get_backend_name()!r} URL; the board needs "
                "PostgreSQL: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            )
        if not url.database or not url.username:
            raise WorkbenchError(
                f"{source}: the URL names no {'database' if url.username else 'user'}; "
                "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            )
        # URL.set() leaves a field alone when given None: build the password-free URL anew.
        bare = URL.create(
            DRIVER,
            username=url.username,
            host=url.host,
            port=url.port,
            database=url.database,
            query=url.query,
        )
        return cls(bare, url.password, passfile)

    @property
    def name(self) -> str:
        return self.url.database

    def plain_url(self) -> str:
        """The SQLAlchemy URL without a password: safe to print, log and pass as an argument."""
        return self.url.render_as_string(hide_password=False)

    def masked_url(self) -> str:
        """The URL as shown to people: ``***`` where a password goes."""
        shown = self.url.set(password="-") if self.password or self.passfile else self.url
        return shown.render_as_string(hide_password=True)

    def sibling(self, name: str) -> Database:
        """Another database on the same server, same user and credentials."""
        return Database(self.url.set(database=name), self.password, self.passfile)

    def at_port(self, port: int) -> Database:
        return Database(self.url.set(port=port), self.password, self.passfile)

    def client_env(self) -> dict[str, str]:
        """What a process needs in its environment to log in (libpq reads these)."""
        if self.passfile is not None:
            return {"PGPASSFILE": str(self.passfile)}
        return {"PGPASSWORD": self.password} if self.password else {}

    def connect(self, timeout_s: int = 5):
        """A psycopg2 connection (autocommit)."""
        import psycopg2

        args = self.url.translate_connect_args(username="user", database="dbname")
        extra = {k: v for k, v in self.url.query.items() if isinstance(v, str)}  # e.g. sslmode
        if self.password:
            args["password"] = self.password
        elif self.passfile is not None:
            extra["passfile"] = str(self.passfile)
        connection = psycopg2.connect(connect_timeout=timeout_s, **args, **extra)
        connection.autocommit = True
        return connection


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def answers(db: Database) -> bool:
    """Whether the server accepts ``db``'s login now. A refused password or an unknown
    database is a WorkbenchError at once (waiting would not help); anything else (the
    server still starting, nothing listening yet) is False."""
    import psycopg2

    try:
        db.connect(timeout_s=3).close()
    except psycopg2.OperationalError as err:
        reason = _first_line(err)
        if (
            "authentication failed" in reason
            or "does not exist" in reason
            or "no password" in reason
        ):
            raise WorkbenchError(
                f"cannot log in to {db.masked_url()}: {reason}; check the user, "
                "the password and the database name"
            ) from None
        return False
    return True


def check_reachable(db: Database) -> None:
    """One login to ``db``; a WorkbenchError naming the URL (masked) and the reason if it fails."""
    import psycopg2

    try:
        if answers(db):
            return
        db.connect(timeout_s=5).close()  # again, for the reason
    except psycopg2.OperationalError as err:
        raise WorkbenchError(
            f"cannot reach the database {db.masked_url()}: {_first_line(err)}; "
            "is the server running and the URL right?"
        ) from None


def ensure_database(admin: Database, name: str) -> None:
    """Create database ``name`` on ``admin``'s server unless it exists (``admin`` must be
    allowed to create databases; the message says what to ask for otherwise)."""
    import psycopg2
    from psycopg2 import sql

    # closing(), not the connection's own context: that would open a transaction block,
    # in which CREATE DATABASE is refused.
    with contextlib.closing(admin.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone():
            return
        try:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg2.errors.InsufficientPrivilege:
            user = admin.url.username
            raise WorkbenchError(
                f"user {user!r} may not create the database {name!r} on "
                f"{admin.masked_url()}; ask its administrator to run: "
                f'CREATE DATABASE "{name}" OWNER "{user}"'
            ) from None
        except psycopg2.errors.DuplicateDatabase:
            pass  # created by someone else meanwhile


def from_sources(option: str | None, option_file: str | None) -> Database | None:
    """The database URL from ``--database-url``, else ``--database-url-file``, else the
    environment variable ``WORKBENCH_DATABASE_URL``; None when none is given."""
    if option:
        return Database.parse(option, "--database-url")
    if option_file:
        path = Path(option_file).expanduser()
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except OSError as err:
            raise WorkbenchError(
                f"--database-url-file {path}: cannot read it ({err.strerror}); "
                "give a file whose first line is the database URL"
            ) from None
        text = next((line for line in lines if line and not line.startswith("#")), "")
        return Database.parse(text, f"--database-url-file {path}")
    if os.environ.get(URL_ENV):
        return Database.parse(os.environ[URL_ENV], URL_ENV)
    return None


def write_passfile(path: Path, user: str, password: str) -> None:
    """A libpq password file (mode 600, as libpq requires) for ``user`` on any host and port."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"*:*:*:{user}:{escaped}\n")
    os.chmod(path, 0o600)
