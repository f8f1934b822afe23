"""Readers for what a job's tracking run left in its folder, shared by tests/test_tracking.py and
tests/integration/test_tracking.py: the W&B offline runs (their folders, and the records of their .wandb
files) and the TensorBoard event files (each file's steps, and the steps TensorBoard shows)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

OFFLINE_RUN = re.compile(r"^offline-run-\d{8}_\d{6}-(\w+)$")
BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc32, length, type) records
FILE_HEADER = 7  # ":W&B", magic 0xBEE1, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_runs(job_dir: Path) -> list[tuple[str, Path]]:
    """(run id, folder) of each W&B offline run under <job>/wandb, oldest first."""
    folders = sorted((job_dir / "wandb").glob("offline-run-*"))
    return [(m.group(1), p) for p in folders if (m := OFFLINE_RUN.match(p.name))]


def wandb_records(path: Path) -> list:
    """The protobuf Records of one .wandb file (W&B's own reader is gone from the Python SDK)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", path
    records, pending, at = [], b"", FILE_HEADER
    while at + 7 <= len(raw):
        left = BLOCK - at % BLOCK
        if left < 7:
            at += left  # a block's tail too short for a record header is padding
            continue
        length, kind = struct.unpack("<HB", raw[at + 4:at + 7])
        if at + 7 + length > len(raw):
            break  # the last record of a process killed while writing it
        chunk = raw[at + 7:at + 7 + length]
        at += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_run(folder: Path, tag: str = "train/loss") -> dict:
    """An offline run's id, project, name, group, tags, config and the train/global_step of each history row
    that holds `tag`."""
    (path,) = folder.glob("run-*.wandb")
    found: dict = {"steps": [], "config": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            found.update(run_id=run.run_id, project=run.project, name=run.display_name, group=run.run_group,
                         tags=list(run.tags))
            found["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            found["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            if "train/global_step" in row and tag in row:
                found["steps"].append(int(row["train/global_step"]))
    return found


def event_file_steps(folder: Path, tag: str) -> list[list[int]]:
    """The steps of `tag` in each TensorBoard event file of the folder, in the order TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        found = [e.step for e in EventFileLoader(str(path)).Load() if e.HasField("summary")
                 and any(v.tag == tag for v in e.summary.value)]
        if found:
            steps.append(found)
    return steps


def shown_steps(folder: Path, tag: str) -> list[int]:
    """The steps of `tag` as TensorBoard shows them (its EventAccumulator, restarts purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [s.step for s in accumulator.Scalars(tag)]


def one_axis(steps: list[int]) -> bool:
    """A step axis that neither restarts nor repeats: strictly increasing."""
    return all(a < b for a, b in zip(steps, steps[1:]))
