"""Shared fixtures: throwaway SQLite files and throwaway databases on a real MySQL server.

MySQL tests skip only when the server does not answer and MySQL is not required. CI sets
CREDIT_RISK_REQUIRE_MYSQL=1, so there an unreachable server fails the tests instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

MYSQL_SERVER_URL = os.environ.get(
    "CREDIT_RISK_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"
)
MYSQL_REQUIRED = os.environ.get("CREDIT_RISK_REQUIRE_MYSQL") == "1"


def _mysql_server() -> sa.Engine:
    engine = sa.create_engine(MYSQL_SERVER_URL, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        engine.dispose()
        message = f"MySQL server at {engine.url.render_as_string()} does not answer: {error}"
        if MYSQL_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return engine


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[sa.Engine]:
    """An engine on the MySQL server itself, with rights to create databases and users."""
    engine = _mysql_server()
    yield engine
    engine.dispose()


def create_mysql_database(server: sa.Engine) -> str:
    """Create an empty database with a unique name and return its name."""
    name = f"crtest_{uuid.uuid4().hex[:12]}"
    with server.begin() as connection:
        connection.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    return name


def drop_mysql_database(server: sa.Engine, name: str) -> None:
    """Drop a database made by create_mysql_database."""
    with server.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


def mysql_url_for(server: sa.Engine, database: str) -> str:
    """A SQLAlchemy URL for one database on the test server, password included."""
    return server.url.set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def mysql_url(mysql_server: sa.Engine) -> Iterator[str]:
    """URL of a fresh, empty MySQL database that is dropped after the test."""
    name = create_mysql_database(mysql_server)
    yield mysql_url_for(mysql_server, name)
    drop_mysql_database(mysql_server, name)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a fresh SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database URL, once on SQLite and once on MySQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("mysql_url")
