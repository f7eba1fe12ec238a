"""`[server] database`: a SQLite file (the default, unchanged) or a PostgreSQL URL, and where the server's own files
go with each; a wrong URL or a missing driver is a message that says what to do, and never shows the password."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plush.config import data_home, load_config, masked
from plush.errors import ConfigError
from plush.server.certificate import certificate_paths
from plush.server.dashboard.passwords import password_file
from plush.server.retention import audio_dir
from plush.server.store import Store, StoreError


def test_a_sqlite_database_keeps_the_servers_files_beside_it(tmp_path: Path) -> None:
    config = load_config(search=False, server={"database": str(tmp_path / "home" / "plush.db")})
    assert config.server.database_location() == str(tmp_path / "home" / "plush.db")
    assert certificate_paths(config.server)[0].parent == tmp_path / "home"
    assert password_file(config).parent == audio_dir(config.server).parent == tmp_path / "home"
    default = load_config(search=False).server
    assert default.database_path() == data_home() / "plush.db" and default.data_folder() == data_home()


def test_a_postgresql_database_keeps_them_in_the_data_folder_or_data_dir(tmp_path: Path) -> None:
    url = "postgresql://plush@db.example:5432/plush"
    server = load_config(search=False, server={"database": url}).server
    assert server.database_url() == server.database_location() == url
    assert server.data_folder() == data_home(), "every replica on one computer shares it"
    with pytest.raises(ConfigError, match="is a PostgreSQL database"):
        server.database_path()
    shared = load_config(search=False, server={"database": url, "data_dir": str(tmp_path / "shared")}).server
    assert certificate_paths(shared)[0].parent == tmp_path / "shared"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://plush:hunter2@db/plush", "give a SQLite file path or a postgresql://"),
        ("postgresql://plush:hunter2@db:99999/plush", "the port is not a number"),
        ("postgresql://plush:hunter2@db/plush/extra", "the database name is one word"),
    ],
)
def test_a_wrong_database_url_is_refused_without_its_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(search=False, server={"database": url})
    assert "hunter2" not in str(caught.value) and "plush:****@db" in str(caught.value)


def test_config_show_masks_the_password_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUSH_SERVER__DATABASE", "postgresql://plush:hunter2@db:5432/plush")
    shown = masked(load_config(search=False))["server"]["database"]
    assert shown == "postgresql://plush:****@db:5432/plush"


async def test_without_asyncpg_a_postgresql_database_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as on a server installed without plush[postgres]
    monkeypatch.delitem(sys.modules, "plush.server.store.postgres", raising=False)
    with pytest.raises(StoreError, match=r"pip install 'plush\[postgres\]'") as caught:
        await Store.open("postgresql://plush:hunter2@db:5432/plush")
    assert "hunter2" not in str(caught.value)
