"""`keydrift history`: filters, the three output formats, escaped binary keys,
and argument errors.

The database is written by the C store itself: the unit-test binary's
`store_fixture_for_integration` test writes five known divergences to the path
in KEYDRIFT_STORE_FIXTURE (see tests/unit/test_store.c). The binary is found
through KEYDRIFT_UNIT_BIN, else next to KEYDRIFT_BIN (build-asan/), else in
build/ beside it (`make integration` builds it).

Fixture rows (id, replica, key, kind, state, resolution, age):
  1 cache-a    user:1              value    confirmed  -         10 min
  2 replica-1  b"bin\\0\\xff\\n,\\"q"  missing  resolved   repaired  2 h
  3 cache-a    old                 ttl      cleared    -         3 days
  4 replica-1  user:1              extra    suspect    -         30 s
  5 cache-a    back\\slash          type     repairing  -         5 min
"""
import base64
import csv
import io
import json
import os
import sqlite3
import subprocess
import time

import pytest

from harness import KEYDRIFT

BIN_KEY = b"bin\x00\xff\n,\"q"
BIN_KEY_TEXT = 'bin\\x00\\xff\\x0a,"q'


def unit_binary():
    env = os.environ.get("KEYDRIFT_UNIT_BIN")
    if env:
        return env
    here = os.path.dirname(KEYDRIFT)
    for cand in (os.path.join(here, "unit-tests"), os.path.join(here, "build", "unit-tests")):
        if os.access(cand, os.X_OK):
            return cand
    raise AssertionError("unit-tests binary not found beside %s; run `make build/unit-tests` "
                         "or set KEYDRIFT_UNIT_BIN" % KEYDRIFT)


@pytest.fixture
def db(h):
    path = os.path.join(h.tmp, "history.db")
    r = subprocess.run([unit_binary(), "store_fixture"], capture_output=True, text=True,
                       env=dict(os.environ, KEYDRIFT_STORE_FIXTURE=path), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed" in r.stdout
    return path


def history(h, *args):
    r = h.run_keydrift("history", *args)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def ids_json(h, db, *args):
    rc, out, err = history(h, "--db", db, "--format", "json", *args)
    assert rc == 0, err
    return [d["id"] for d in json.loads(out)["divergences"]]


def test_fixture_is_a_real_store_database(db):
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (key,) = con.execute("SELECT key FROM divergences WHERE id = 2").fetchone()
        assert key == BIN_KEY
    finally:
        con.close()


def test_json_format_all_fields(h, db):
    rc, out, err = history(h, "--db", db, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    rows = doc["divergences"]
    assert [d["id"] for d in rows] == [4, 5, 1, 2, 3]  # newest first
    bin_row = next(d for d in rows if d["id"] == 2)
    assert bin_row["key"] == BIN_KEY_TEXT
    assert base64.b64decode(bin_row["key_base64"]) == BIN_KEY
    assert bin_row["state"] == "resolved" and bin_row["resolution"] == "repaired"
    assert bin_row["resolved_at"] == bin_row["first_seen"] + 1000
    assert bin_row["primary_digest"] == "0123456789abcdef"
    assert bin_row["replica_digest"] == "fedcba9876543210"
    assert bin_row["confirmed_at"] is None and bin_row["note"] is None
    for field in ("replica", "db", "kind", "primary_ttl_ms", "replica_ttl_ms",
                  "primary_offset", "found_by"):
        assert field in bin_row
    assert next(d for d in rows if d["id"] == 5)["key"] == "back\\\\slash"


def test_filters(h, db):
    assert ids_json(h, db, "--state", "open") == [4, 5, 1]
    assert ids_json(h, db, "--state", "resolved") == [2]
    assert ids_json(h, db, "--state", "cleared") == [3]
    assert ids_json(h, db, "--replica", "cache-a") == [5, 1, 3]
    assert ids_json(h, db, "--replica", "nope") == []
    assert ids_json(h, db, "--kind", "ttl") == [3]
    assert ids_json(h, db, "--key", "user:1") == [4, 1]
    assert ids_json(h, db, "--key", BIN_KEY_TEXT) == [2]
    assert ids_json(h, db, "--key", "bin") == []  # exact bytes, not a prefix
    assert ids_json(h, db, "--key", "back\\\\slash") == [5]
    assert ids_json(h, db, "--since", "1h") == [4, 5, 1]
    assert ids_json(h, db, "--since", "3m") == [4]
    assert ids_json(h, db, "--since", "1d") == [4, 5, 1, 2]
    assert ids_json(h, db, "--since", str(int(time.time() * 1000) - 7 * 60000)) == [4, 5]
    assert ids_json(h, db, "--limit", "2") == [4, 5]
    assert ids_json(h, db, "--state", "open", "--replica", "cache-a", "--since", "7m") == [5]


def test_table_format(h, db):
    rc, out, err = history(h, "--db", db)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "FIRST", "SEEN", "(UTC)", "REPLICA", "KIND", "STATE",
                                "RESOLUTION", "KEY"]
    assert len(lines) == 6
    # Aligned: every column starts at the same offset on every line.
    start = lines[0].index("REPLICA")
    assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines)
    row2 = next(line for line in lines if line.split()[0] == "2")
    assert row2.endswith(BIN_KEY_TEXT)
    assert "replica-1" in row2 and "missing" in row2 and "repaired" in row2
    assert time.strftime("%Y-", time.gmtime()) in row2 and "Z" in row2
    assert "\x00" not in out and "\xff" not in out
    rc, out, _ = history(h, "--db", db, "--replica", "nope")
    assert rc == 0 and "no divergences" in out


def test_csv_format(h, db):
    r = h.run_keydrift("history", "--db", db, "--format", "csv")
    assert r.returncode == 0, r.stderr
    raw = r.stdout.decode("ascii")  # escaped: pure ASCII
    assert raw.endswith("\r\n") and "\r\n" in raw.split("\r\n", 1)[0] + "\r\n"
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert [int(x["id"]) for x in rows] == [4, 5, 1, 2, 3]
    bin_row = next(x for x in rows if x["id"] == "2")
    assert bin_row["key"] == BIN_KEY_TEXT  # the comma and quote survive RFC 4180 quoting
    assert base64.b64decode(bin_row["key_base64"]) == BIN_KEY
    assert bin_row["resolution"] == "repaired" and bin_row["replica"] == "replica-1"
    assert bin_row["first_seen"].endswith("Z") and bin_row["confirmed_at"] == ""
    assert '"bin\\x00\\xff\\x0a,""q"' in raw


def test_db_from_config_file(h, db):
    conf = h.write_file("k.conf", "history-db %s\n" % db)
    rc, out, err = history(h, "--config", conf, "--format", "json")
    assert rc == 0, err
    assert len(json.loads(out)["divergences"]) == 5
    # --db wins over the config file.
    rc, _, err = history(h, "--config", conf, "--db", os.path.join(h.tmp, "other.db"))
    assert rc == 2 and "other.db" in err


@pytest.mark.parametrize("args, message", [
    (["--state", "bogus"], "--state"),
    (["--kind", "bogus"], "--kind"),
    (["--limit", "0"], "--limit"),
    (["--limit", "x"], "--limit"),
    (["--limit", "10001"], "--limit"),
    (["--since", "yesterday"], "--since"),
    (["--format", "xml"], "--format"),
    (["--key", "bad\\q"], "--key"),
    (["--frobnicate", "1"], "unknown option"),
    (["--replica"], "needs a value"),
    (["stray"], "unexpected argument"),
])
def test_bad_arguments_exit_2(h, db, args, message):
    rc, out, err = history(h, "--db", db, *args)
    assert rc == 2
    assert message in err
    assert out == ""


def test_missing_or_bad_database(h):
    missing = os.path.join(h.tmp, "missing.db")
    rc, _, err = history(h, "--db", missing)
    assert rc == 2 and "no history database" in err and missing in err
    assert not os.path.exists(missing)  # never created by a reader
    conf = h.write_file("bad.conf", "no-such-option 1\n")
    rc, _, err = history(h, "--config", conf)
    assert rc == 2 and "bad.conf" in err
    newer = os.path.join(h.tmp, "newer.db")
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version = 999")
    con.execute("CREATE TABLE x(y)")
    con.commit()
    con.close()
    rc, _, err = history(h, "--db", newer)
    assert rc == 2 and "newer" in err
    junk = h.write_file("junk.db", "this is not sqlite\n" * 100)
    rc, _, err = history(h, "--db", junk)
    assert rc == 2 and err


def test_help(h):
    r = h.run_keydrift("history", "--help")
    assert r.returncode == 0
    out = r.stdout.decode()
    for flag in ("--db", "--config", "--since", "--key", "--replica", "--state", "--kind",
                 "--limit", "--format"):
        assert flag in out
