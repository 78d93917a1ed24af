"""The settings object: defaults, TOML file, IPP_* overrides, and clear errors."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from urllib.parse import quote

import pytest

from shared.core.errors import DsnError, IppError, SettingsError, mask_dsns
from shared.core.log import configure_logging, get_logger
from shared.core.settings import Settings, load_settings, parse_dsn
from tests.helpers import ROOT


def test_defaults_use_the_local_socket_database_with_its_agents_account(tmp_path):
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.effective_dsn().endswith("var/mariadb/mysqld.sock")
    own = load_settings(environ={}, var_dir=str(tmp_path))
    assert own.effective_dsn().startswith("mysql://root@localhost/ipp?unix_socket=")  # not started yet
    (tmp_path / "mariadb").mkdir()
    (tmp_path / "mariadb" / "client.password").write_text("0f1e2d\n")  # ippctl db start-local made it
    assert own.effective_dsn().startswith("mysql://ipp:0f1e2d@localhost/ipp?unix_socket=")


def test_environment_overrides_the_toml_file(tmp_path):
    path = tmp_path / "ipp.toml"
    path.write_text('heartbeat_interval_s = 2.5\nlog_level = "debug"\ndb_pool_size = 9\n')
    settings = load_settings(environ={"IPP_SETTINGS": str(path), "IPP_DB_POOL_SIZE": "3"})
    assert settings.heartbeat_interval_s == 2.5
    assert settings.log_level == "debug"
    assert settings.db_pool_size == 3


@pytest.mark.parametrize(
    ("environ", "toml", "message"),
    [
        (
            {"IPP_HEARTBEAT_INTERVAL_S": "soon"},
            None,
            "IPP_HEARTBEAT_INTERVAL_S: cannot use 'soon' for setting heartbeat_interval_s",
        ),
        ({"IPP_DB_POOL_SIZE": "0"}, None, "setting db_pool_size must be > 0"),
        ({"IPP_LOG_FORMAT": "xml"}, None, "log_format must be auto, json or console"),
        ({"IPP_HEARTBEAT_GRACE_S": "90"}, None, "heartbeat_grace_s (90.0) must be below"),
        ({}, "heartbeat = 3\n", "unknown setting(s): heartbeat"),
        ({}, "poll_interval_s = [\n", "not valid TOML"),
        ({"IPP_DB_DSN": "mysql://h"}, None, "names no database"),
    ],
)
def test_bad_settings_name_the_setting_and_the_problem(tmp_path, environ, toml, message):
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
        environ = {**environ, "IPP_SETTINGS": str(path)}
    with pytest.raises(SettingsError) as info:
        load_settings(environ=environ)
    assert message in str(info.value)


def test_a_missing_settings_file_is_named():
    with pytest.raises(SettingsError, match=r"IPP_SETTINGS=/nonexistent/ipp\.toml: cannot read"):
        load_settings(environ={"IPP_SETTINGS": "/nonexistent/ipp.toml"})


def test_dsns_parse_tcp_and_socket_forms():
    tcp = parse_dsn("mysql://ipp:s%40cret@db.example:3307/gpc1")
    assert (tcp.user, tcp.password, tcp.host, tcp.port, tcp.database) == (
        "ipp",
        "s@cret",
        "db.example",
        3307,
        "gpc1",
    )
    sock = parse_dsn("mysql://root@localhost/ipp?unix_socket=/var/run/mysqld/mysqld.sock")
    assert sock.connect_kwargs()["unix_socket"] == "/var/run/mysqld/mysqld.sock"
    assert parse_dsn(sock.url()) == sock
    assert "s@cret" not in tcp.display()


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgres://u@h/db", "scheme must be mysql://"),
        ("mysql://u@h:99999/db", "malformed"),
        ("mysql://u@h", "names no database"),
        ("mysql:///db", "names no host and no unix_socket"),
        ("mysql://u@h/db?sslmode=on", "unknown option(s) sslmode"),
    ],
)
def test_malformed_dsns_are_refused(dsn, message):
    with pytest.raises(DsnError) as info:
        parse_dsn(dsn)
    assert message in str(info.value)


def test_a_password_is_never_echoed_in_a_dsn_error():
    with pytest.raises(DsnError) as info:
        parse_dsn("mysql://u:hunter2@h")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("password", ["a/b#c?d", "s3cr@t:x", "plain", "sp ace%"])
def test_a_password_with_url_characters_survives_encoding_and_is_never_shown(password):
    """User and password are percent-encoded when a URL is built (the database of a second
    site, the PSPS DSN), so they parse back the same; every form of the DSN in a message is
    masked by its place, even one that does not parse."""
    dsn = parse_dsn(f"mysql://ipp:{quote(password, safe='')}@db1:3306/ipp")
    assert dsn.password == password
    derived = dsn.with_database("ipp_mirror").url()
    assert parse_dsn(derived).password == password
    texts = [derived]
    if " " not in password:  # in free text, a DSN ends at white space
        texts += [f"mysql://ipp:{password}@db1/ipp", f"boom at mysql://ipp:{password}@h now"]
    for text in texts:
        shown = mask_dsns(text)
        assert password not in shown and "***" in shown, shown
    with pytest.raises(DsnError) as raised:
        parse_dsn(f"mysql://ipp:{password}@db1/ipp?bad=1")
    assert password not in str(raised.value)


def test_log_lines_never_carry_a_dsn_password():
    out = io.StringIO()
    configure_logging(load_settings(environ={}, log_format="json"), stream=out)
    get_logger("t").error("startup_failed", error="cannot reach mysql://ipp:hunter2/x@db1/ipp")
    line = json.loads(out.getvalue().splitlines()[-1])
    assert "hunter2" not in line["error"] and "ipp:***@db1" in line["error"]


def test_a_librarys_logged_traceback_is_one_json_line_with_an_exception_key():
    """Red-team finding: aiohttp's "Error handling request" came out as a bare traceback
    between the JSON lines. Whatever ``logging`` is told is rendered like the agents' own."""
    out = io.StringIO()
    configure_logging(load_settings(environ={}, log_format="json"), stream=out)
    try:
        int("not a number")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["event"] == "Error handling request from 127.0.0.1" and line["level"] == "error"
    assert line["logger"] == "aiohttp.server" and "Traceback" in line["exception"]
    assert "ValueError: invalid literal" in line["exception"]


@pytest.mark.parametrize("name", ["c1\n", "c1\r", "ok\nother"])
def test_names_with_a_line_break_are_refused(name):
    """Validation patterns end at the end of the text, not before a trailing newline."""
    from shared.distribution import datastore
    from shared.psps import configs
    from shared.storage.keys import VOLUME_NAME

    with pytest.raises(IppError):
        configs.check_name(name)
    with pytest.raises(IppError):
        datastore.check_name("product", name)
    assert not VOLUME_NAME.match(name)


def test_the_stand_ins_knobs_are_their_own_section_not_ipp_settings(tmp_path):
    """[stand_ins] in the settings file (or IPP_ODM_FAIL_SHARE) sets a stand-in's knob; the
    IPP's settings neither have such fields nor refuse the table."""
    from sim.settings import load_stand_ins

    path = tmp_path / "ipp.toml"
    path.write_text("ds_port = 9000\n[stand_ins]\nodm_fail_share = 0.25\n")
    env = {"IPP_SETTINGS": str(path), "IPP_ODM_SLOW_S": "2"}
    assert load_settings(environ=env).ds_port == 9000
    knobs = load_stand_ins(environ=env)
    assert (knobs.odm_fail_share, knobs.odm_slow_s) == (0.25, 2.0)
    assert not hasattr(load_settings(environ=env), "odm_fail_share")
    path.write_text("[stand_ins]\nodm_fail_share = 2\n")
    with pytest.raises(SettingsError, match="odm_fail_share must be a share between 0 and 1"):
        load_stand_ins(environ=env)
    path.write_text("[stand_ins]\nno_such_knob = 1\n")
    with pytest.raises(SettingsError, match=r"\[stand_ins\]: unknown setting\(s\): no_such_knob"):
        load_stand_ins(environ=env)


@pytest.mark.parametrize(
    ("toml", "secret"),
    [
        ('ds_token = "s3cret"\n', "ds_token"),
        ('odm_token = "s3cret"\n', "odm_token"),
        ('db_dsn = "mysql://ipp:s3cret@db1:3306/ipp"\n', "db_dsn"),
    ],
)
def test_a_settings_file_with_a_secret_that_every_user_can_read_is_refused(tmp_path, toml, secret):
    path = tmp_path / "ipp.toml"
    path.write_text(toml)
    path.chmod(0o644)
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"IPP_SETTINGS": str(path)})
    assert f"IPP_SETTINGS={path} holds {secret}" in str(info.value) and "chmod 600" in str(info.value)
    assert "s3cret" not in str(info.value)
    path.chmod(0o600)
    load_settings(environ={"IPP_SETTINGS": str(path)})
    # a DSN without a password is no secret: the file may stay readable
    path.write_text('db_dsn = "mysql://ipp@db1:3306/ipp"\n')
    path.chmod(0o644)
    load_settings(environ={"IPP_SETTINGS": str(path)})


def test_ippctl_db_status_shows_the_database_without_its_password():
    env = {**os.environ, "IPP_DB_DSN": "mysql://ipp:pw-s3cret@127.0.0.1:1/ipp"}
    out = subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", "db", "status"], env=env, capture_output=True, text=True,
        timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert "database:        ipp@127.0.0.1:1/ipp" in out.stdout, out.stdout + out.stderr
    assert "pw-s3cret" not in out.stdout + out.stderr


@pytest.mark.parametrize("dsn", ["mysql://u:pw#x@h/db", "mysql://u:pw?x@h/db", "mysql://u:pw/x@h/db"])
def test_a_password_that_ends_the_host_part_is_named_as_such_and_never_shown(dsn):
    """Issue 33: urllib's "Port could not be cast ... as 'pw'" quoted the password's start."""
    with pytest.raises(DsnError) as info:
        parse_dsn(dsn)
    assert "percent-encoded" in str(info.value) and "pw" not in str(info.value)
