"""The manifest's journal (launcher.sweep.journal) and the manifest that folds it in (launcher.sweep.manifest).

A sweep records each point's change as one journal line instead of rewriting manifest.jsonl; every reader
must see the journal's records, a compaction must leave the same points whenever a crash cuts it, and a
torn last line must cost at most that line.
"""

from __future__ import annotations

import json

import pytest

from launcher.sweep import journal as journal_module
from launcher.sweep.journal import JOURNAL, Journal, parse_points, replay
from launcher.sweep.manifest import MANIFEST, Manifest, new_point


def submitted(point: dict, job_id: str) -> dict:
    return {**point, "status": "submitted", "job_id": job_id}


def test_replay_lets_a_points_last_record_win_and_adds_new_points():
    a, b = new_point(0, ["x=1", "y=1"]), new_point(1, ["x=2", "y=1"])
    records = [submitted(a, "7"), {**a, "overrides": ["y=1", "x=1"], "status": "submitted", "job_id": "8"},
               new_point(2, ["x=3", "y=1"])]
    points = replay([a, b], records)
    assert [(p["index"], p["status"], p["job_id"]) for p in points] == [
        (0, "submitted", "8"), (1, "pending", None), (2, "pending", None)]
    # replaying the same records over the result changes nothing: a compaction cut by a crash is harmless
    assert replay(points, records) == points


def test_journal_appends_whole_lines_in_order(tmp_path):
    journal = Journal(tmp_path)
    assert journal.records() == [] and journal.stamp() is None
    p = new_point(0, ["x=1"])
    line = journal.append(submitted(p, "1"))
    journal.append(submitted(p, "2"))
    assert json.loads(line)["job_id"] == "1" and line.endswith("\n")
    assert [r["job_id"] for r in journal.records()] == ["1", "2"]
    assert (tmp_path / JOURNAL).read_text().count("\n") == 2
    journal.remove()
    journal.remove()  # gone already: nothing to do
    assert not (tmp_path / JOURNAL).exists()


def test_a_torn_last_line_costs_only_itself(tmp_path):
    journal = Journal(tmp_path)
    p = new_point(0, ["x=1"])
    journal.append(submitted(p, "1"))
    with open(tmp_path / JOURNAL, "a") as f:
        f.write(json.dumps(submitted(p, "2"))[:25])  # a write cut off by a crash: no newline
    assert [r["job_id"] for r in journal.records()] == ["1"]  # the torn line is skipped
    journal.append(submitted(p, "3"))
    assert [r["job_id"] for r in journal.records()] == ["1", "3"]
    # counter-test: the same record written straight after the torn line (no newline first) is lost with it
    torn = tmp_path / "torn"
    torn.write_text(json.dumps(submitted(p, "1")) + "\n" + json.dumps(submitted(p, "2"))[:25]
                    + json.dumps(submitted(p, "3")) + "\n")
    assert [r["job_id"] for r in parse_points(torn.read_text())] == ["1"]


def test_a_point_change_goes_to_the_journal_and_every_reader_sees_it(tmp_path):
    m = Manifest(tmp_path)
    with m.edit() as points:
        for i in range(3):
            m.upsert(points, i, [f"x={i}"])
    before = (tmp_path / MANIFEST).read_bytes()
    with m.edit_point(1, ["x=1"]) as point:
        point.update(status="submitted", job_id="41")
    assert (tmp_path / MANIFEST).read_bytes() == before  # not rewritten
    assert [r["job_id"] for r in Journal(tmp_path).records()] == ["41"]
    # a reader in another process (a new object) and this object's own view agree
    assert [p["status"] for p in Manifest(tmp_path).read()] == ["pending", "submitted", "pending"]
    assert [p["status"] for p in m.current()] == ["pending", "submitted", "pending"]
    # a new point recorded through the journal alone
    with m.edit_point(3, ["x=3"]) as point:
        point.update(status="rejected", reason="no")
    assert [p["index"] for p in Manifest(tmp_path).read()] == [0, 1, 2, 3]


def test_compaction_folds_the_journal_into_the_manifest(tmp_path):
    m = Manifest(tmp_path)
    with m.edit() as points:
        m.upsert(points, 0, ["x=0"])
        m.upsert(points, 1, ["x=1"])
    with m.edit_point(0, ["x=0"]) as point:
        point.update(status="submitted", job_id="5")
    seen = Manifest(tmp_path).read()
    m.compact()
    assert not (tmp_path / JOURNAL).exists()
    assert parse_points((tmp_path / MANIFEST).read_text()) == seen  # manifest.jsonl alone is the record again
    m.compact()  # nothing to fold: nothing happens
    assert Manifest(tmp_path).read() == seen


def test_an_edit_folds_the_journal_first_so_a_crash_cannot_undo_it(tmp_path, monkeypatch):
    m = Manifest(tmp_path)
    with m.edit() as points:
        m.upsert(points, 0, ["x=0"])
    with m.edit_point(0, ["x=0"]) as point:
        point.update(status="submitted", job_id="5", state="PENDING")
    # a crash between the fold's rewrite and the journal's removal: the journal stays, its replay is harmless
    monkeypatch.setattr(Journal, "remove", lambda self: (_ for _ in ()).throw(SystemExit("crash")))
    with pytest.raises(SystemExit):
        with m.edit() as points:
            points[0]["state"] = "RUNNING"
    assert (tmp_path / JOURNAL).exists()
    (point,) = Manifest(tmp_path).read()
    assert point["job_id"] == "5" and point["state"] == "PENDING"  # the folded record; the edit never ran
    monkeypatch.undo()
    with Manifest(tmp_path).edit() as points:
        points[0]["state"] = "RUNNING"
    assert not (tmp_path / JOURNAL).exists() and Manifest(tmp_path).read()[0]["state"] == "RUNNING"
    # counter-test: had the edit been written in the same rewrite as the fold, a journal left behind by a
    # crash would undo it on the next read
    (tmp_path / JOURNAL).write_text(json.dumps(submitted(new_point(0, ["x=0"]), "5") | {"state": "PENDING"}) + "\n")
    assert Manifest(tmp_path).read()[0]["state"] == "PENDING"


def test_an_edit_from_another_process_while_the_sweep_journals(tmp_path):
    sweep = Manifest(tmp_path)
    with sweep.edit() as points:
        sweep.upsert(points, 0, ["x=0"])
        sweep.upsert(points, 1, ["x=1"])
    with sweep.edit_point(0, ["x=0"]) as point:
        point.update(status="submitted", job_id="5")
    with Manifest(tmp_path).edit() as points:  # `jobs status` writing a state: folds the journal in
        points[0]["state"] = "RUNNING"
    assert not (tmp_path / JOURNAL).exists()
    with sweep.edit_point(1, ["x=1"]) as point:  # the sweep's cached points are stale: it reads again
        point.update(status="submitted", job_id="6")
    points = Manifest(tmp_path).read()
    assert [(p["job_id"], p["state"]) for p in points] == [("5", "RUNNING"), ("6", None)]


def test_a_reader_reads_again_when_a_compaction_replaced_the_manifest_meanwhile(tmp_path, monkeypatch):
    m = Manifest(tmp_path)
    with m.edit() as points:
        m.upsert(points, 0, ["x=0"])
    with m.edit_point(0, ["x=0"]) as point:
        point.update(status="submitted", job_id="5")
    stale_manifest = (tmp_path / MANIFEST).read_text()
    real_records = Journal.records
    calls = []

    def records_after_a_compaction(self):
        calls.append(1)
        if len(calls) == 1:  # between this reader's two reads, another process folds the journal in and deletes it
            Manifest(tmp_path).compact()
        return real_records(self)

    monkeypatch.setattr(Journal, "records", records_after_a_compaction)
    (point,) = Manifest(tmp_path).read()
    assert point["status"] == "submitted" and len(calls) == 3  # the compaction's own read, then the second pass
    # counter-test: what the first pass had in hand (the old manifest, the journal gone) misses the change
    assert [p["status"] for p in replay(parse_points(stale_manifest), [])] == ["pending"]


def test_stamps_tell_a_replaced_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("a")
    first = journal_module.stamp_of(path)
    (tmp_path / "g").write_text("a")
    (tmp_path / "g").replace(path)
    assert journal_module.stamp_of(path) != first and journal_module.stamp_of(tmp_path / "missing") is None
