"""Least privilege and secrets: the pipeline on MariaDB with the README's users and grants.

The users are created for the test with exactly the GRANT statements the README gives, and
dropped afterwards. Their password is distinctive, so any copy of it that the project writes
anywhere (logs, Dagster's instance storage, run records, event metadata, errors, files) can be
searched for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url_for,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL_BOOK = 200

# A password no other text contains, with characters a URL must percent-encode.
PASSWORD = "Zq8#h6-Pa55/w0rd!"

# The README's GRANT statements, `{source}`, `{warehouse}` and the user names filled in.
SOURCE_GRANT = "GRANT SELECT ON `{source}`.`delinquency_snapshot` TO '{reader}'@'%'"
WAREHOUSE_GRANT = (
    "GRANT SELECT, INSERT, DELETE, CREATE, DROP, ALTER ON `{warehouse}`.* TO '{pipeline}'@'%'"
)
POWER_BI_GRANT = "GRANT SELECT ON `{warehouse}`.* TO '{powerbi}'@'%'"


@dataclass(frozen=True)
class LeastPrivilege:
    """A source and a warehouse database with a user each, plus a read-only Power BI user."""

    server: sa.Engine
    source_db: str
    warehouse_db: str
    users: dict[str, str]

    def url(self, role: str, password: str = PASSWORD) -> str:
        """URL of the database `role` works on, as the role's user."""
        database = self.source_db if role == "reader" else self.warehouse_db
        url = self.server.url.set(username=self.users[role], password=password, database=database)
        return url.render_as_string(hide_password=False)

    def admin_url(self, database: str) -> str:
        """URL of a database as the server's administrator."""
        return mysql_url_for(self.server, database)


@pytest.fixture(scope="module")
def least_privilege(mysql_server: sa.Engine) -> Iterator[LeastPrivilege]:
    """Fresh databases and users holding exactly the README's grants; all dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    setup = LeastPrivilege(
        server=mysql_server,
        source_db=create_mysql_database(mysql_server),
        warehouse_db=create_mysql_database(mysql_server),
        users={role: f"cr{role[:3]}_{suffix}" for role in ("reader", "pipeline", "powerbi")},
    )
    write_source_table(
        setup.admin_url(setup.source_db), generate_snapshot(accounts=SMALL_BOOK, months=12)
    )
    names = {
        "source": setup.source_db,
        "warehouse": setup.warehouse_db,
        **setup.users,
    }
    with mysql_server.begin() as connection:
        for user in setup.users.values():
            connection.execute(
                sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :password"),
                {"password": PASSWORD},
            )
        for grant in (SOURCE_GRANT, WAREHOUSE_GRANT, POWER_BI_GRANT):
            connection.execute(sa.text(grant.format(**names)))
    yield setup
    with mysql_server.begin() as connection:
        for user in setup.users.values():
            connection.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
    drop_mysql_database(mysql_server, setup.source_db)
    drop_mysql_database(mysql_server, setup.warehouse_db)


@dataclass(frozen=True)
class GoodRun:
    """One `credit-risk run --verbose` as the README's users, and the folder it wrote to."""

    folder: Path
    result: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def good_run(least_privilege: LeastPrivilege, tmp_path_factory: pytest.TempPathFactory) -> GoodRun:
    """The whole pipeline run once as the reader and pipeline users, for every test here."""
    folder = tmp_path_factory.mktemp("least-privilege")
    return GoodRun(folder, credit_risk(folder, least_privilege, "run", "--verbose"))


def credit_risk(
    tmp_path: Path, setup: LeastPrivilege, *args: str, source_password: str = PASSWORD
) -> subprocess.CompletedProcess:
    """The `credit-risk` command in a child process, as the reader and pipeline users."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CREDIT_RISK_")
    }
    environment.update(
        CREDIT_RISK_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        TMPDIR=str(tmp_path / "tmp"),
        CREDIT_RISK_SOURCE_URL=setup.url("reader", source_password),
        CREDIT_RISK_WAREHOUSE_URL=setup.url("pipeline"),
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "credit_risk_assets.cli", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def table_counts(url: str) -> dict[str, int]:
    """Rows of every table of the database at `url`."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            names = sa.inspect(connection).get_table_names()
            return {
                name: connection.execute(sa.text(f"SELECT COUNT(*) FROM `{name}`")).scalar()
                for name in names
            }
    finally:
        engine.dispose()


# 5. Least privilege.


def test_the_pipeline_runs_with_only_the_readme_grants(
    least_privilege: LeastPrivilege, good_run: GoodRun
) -> None:
    """SELECT on the source table and six rights on the warehouse are enough for every table."""
    counts = table_counts(least_privilege.admin_url(least_privilege.warehouse_db))

    assert good_run.result.returncode == 0, good_run.result.stderr
    assert counts["account_risk_scores"] > 0
    assert counts["pd_model"] > 0
    assert not any(name.endswith(("__staging", "__old")) for name in counts)


def test_each_user_is_refused_outside_its_rights(least_privilege: LeastPrivilege) -> None:
    """The reader cannot write, the pipeline user cannot read the source, Power BI only reads."""
    attempts = {
        # the source user writing to the source
        "reader": "DELETE FROM delinquency_snapshot",
        # the pipeline user reading the source database
        "pipeline": f"SELECT COUNT(*) FROM `{least_privilege.source_db}`.delinquency_snapshot",
        # the Power BI user changing the warehouse
        "powerbi": "CREATE TABLE powerbi_scratch (id INT)",
    }
    refusals = {}
    for role, statement in attempts.items():
        engine = sa.create_engine(least_privilege.url(role))
        try:
            with pytest.raises(sa.exc.OperationalError) as refused, engine.begin() as connection:
                connection.execute(sa.text(statement))
            refusals[role] = str(refused.value.orig)
        finally:
            engine.dispose()

    assert all("denied" in message for message in refusals.values()), refusals
    assert table_counts(least_privilege.admin_url(least_privilege.source_db)) == {
        "delinquency_snapshot": len(generate_snapshot(accounts=SMALL_BOOK, months=12))
    }


def test_power_bi_reads_every_table_the_pipeline_writes(
    least_privilege: LeastPrivilege, good_run: GoodRun
) -> None:
    """The read-only user of the README counts the rows of every warehouse table."""
    expected = table_counts(least_privilege.admin_url(least_privilege.warehouse_db))

    seen = table_counts(least_privilege.url("powerbi"))

    assert good_run.result.returncode == 0, good_run.result.stderr
    assert seen == expected
    assert seen["account_risk_scores"] > 0


# 6. Secrets.


def password_forms(password: str) -> set[str]:
    """The password as it may appear: plain, percent-encoded, form-encoded."""
    return {
        password,
        urllib.parse.quote(password, safe=""),
        urllib.parse.quote_plus(password),
    }


def files_holding(folder: Path, forms: set[str]) -> list[str]:
    """Files under `folder` whose bytes hold any of `forms` (SQLite databases included)."""
    needles = [form.encode() for form in forms]
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


def instance_texts(dagster_home: Path) -> list[str]:
    """Run records (tags, config) and every event (messages, metadata, errors) as text."""
    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        texts = []
        for run in instance.get_runs():
            texts.append(repr(run))
            texts.extend(repr(entry) for entry in instance.all_logs(run.run_id))
        return texts
    finally:
        instance.dispose()


def warehouse_texts(url: str) -> list[str]:
    """Every row of every warehouse table as text."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                pd.read_sql(sa.text(f"SELECT * FROM `{name}`"), connection).to_csv()
                for name in sa.inspect(connection).get_table_names()
            ]
    finally:
        engine.dispose()


def test_the_password_is_nowhere_after_a_good_run_and_two_failing_ones(
    least_privilege: LeastPrivilege, good_run: GoodRun
) -> None:
    """Logs, outputs, Dagster's storage, run records, events and tables never hold it."""
    folder = good_run.folder
    admin_source = sa.create_engine(least_privilege.admin_url(least_privilege.source_db))
    with admin_source.begin() as connection:
        connection.execute(
            sa.text("UPDATE delinquency_snapshot SET days_past_due = -5 WHERE account_id = 3")
        )
    admin_source.dispose()

    invalid_month = credit_risk(folder, least_privilege, "run", "--verbose")
    wrong_password = credit_risk(
        folder, least_privilege, "run", "--verbose", source_password=PASSWORD + "-wrong"
    )

    forms = password_forms(PASSWORD)
    results = (good_run.result, invalid_month, wrong_password)
    outputs = [text for result in results for text in (result.stdout, result.stderr)]
    texts = instance_texts(folder / "dagster")
    tables = warehouse_texts(least_privilege.admin_url(least_privilege.warehouse_db))
    assert good_run.result.returncode == 0, good_run.result.stderr
    assert invalid_month.returncode == 1
    assert "negative_days_past_due" in invalid_month.stderr
    assert wrong_password.returncode == 1
    assert "Access denied" in wrong_password.stderr
    assert [text for text in outputs if any(form in text for form in forms)] == []
    assert files_holding(folder, forms) == []
    assert len(texts) > 100
    # The warehouse URL is in the events (redacted), so the search went where it could leak.
    assert any(least_privilege.users["pipeline"] in text for text in texts)
    assert [text for text in texts if any(form in text for form in forms)] == []
    assert [text for text in tables if any(form in text for form in forms)] == []
