"""A private, throwaway MariaDB server that fault tests may crash, restart and inspect.

The shared test server must never be stopped, since other tests use it at the same time. Tests
that restart a server, or switch on its general query log, start one of these instead: a fresh
data directory in a temporary folder, a free local port, and the server as a child process.
Setting it up takes about 3 s (measured: 2.5 s to install the system tables, 0.1 s to start).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa

from credit_risk_assets_tests.conftest import MYSQL_REQUIRED

STARTUP_TIMEOUT_SECONDS = 60
SHUTDOWN_TIMEOUT_SECONDS = 60
_SERVER_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"]
)


class ServerSetupError(RuntimeError):
    """The throwaway server could not be installed or did not answer in time."""


def _program(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name, path=_SERVER_SEARCH_PATH)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayMariaDB:
    """A MariaDB server on 127.0.0.1 with its own data directory under `folder`.

    `root` has no password and every right. The server can be crashed (SIGKILL), stopped
    cleanly (SIGTERM) and started again on the same data and port.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.datadir = folder / "data"
        self.port = _free_port()
        self.error_log = folder / "error.log"
        self._process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def url(self, database: str = "", user: str = "root", password: str | None = None) -> str:
        """A SQLAlchemy URL for `database` on this server, password included."""
        url = sa.URL.create(
            "mysql+pymysql",
            username=user,
            password=password,
            host="127.0.0.1",
            port=self.port,
            database=database or None,
        )
        return url.render_as_string(hide_password=False)

    def install(self) -> None:
        """Create the data directory with the system tables."""
        installer = _program("mariadb-install-db", "mysql_install_db")
        if installer is None:
            raise ServerSetupError("mariadb-install-db is not installed: install mariadb-server.")
        command = [
            installer,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            f"--datadir={self.datadir}",
            "--skip-test-db",
            "--skip-name-resolve",
            *self._user_option(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerSetupError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}"
            )

    def start(self) -> None:
        """Start the server and wait until it answers a query."""
        server = _program("mariadbd", "mysqld")
        if server is None:
            raise ServerSetupError("mariadbd is not installed: install mariadb-server.")
        command = [
            server,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.folder / 'server.sock'}",
            f"--pid-file={self.folder / 'server.pid'}",
            f"--log-error={self.error_log}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            *self._user_option(),
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_answering()

    def crash(self) -> None:
        """Kill the server with SIGKILL, as a power cut or an OOM kill would."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it to exit."""
        self._signal_and_wait(signal.SIGTERM)

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if self.running:
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def execute(self, statement: str, database: str = "") -> list[tuple]:
        """Rows of one statement run as root on a fresh connection (autocommit)."""
        connection = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database or None
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                rows = [tuple(row) for row in cursor.fetchall()]
            connection.commit()
            return rows
        finally:
            connection.close()

    def _user_option(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; --user needs root rights itself.
        return ["--user=root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []

    def _signal_and_wait(self, signum: int) -> None:
        if not self.running:
            return
        self._process.send_signal(signum)
        try:
            self._process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerSetupError(
                    f"mariadbd exited with {self._process.returncode}: {self._log_tail()}"
                )
            try:
                self.execute("SELECT 1")
                return
            except pymysql.err.OperationalError:
                time.sleep(0.05)
        raise ServerSetupError(
            f"mariadbd did not answer within {STARTUP_TIMEOUT_SECONDS} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if not self.error_log.exists():
            return "(no error log)"
        return self.error_log.read_text(errors="replace")[-2000:]


def start_throwaway_server(folder: Path) -> ThrowawayMariaDB:
    """A running throwaway server in `folder`; skips (or fails, in CI) without MariaDB."""
    server = ThrowawayMariaDB(folder)
    try:
        server.install()
        server.start()
    except ServerSetupError as error:
        server.remove()
        if MYSQL_REQUIRED:
            pytest.fail(str(error))
        pytest.skip(str(error))
    return server
