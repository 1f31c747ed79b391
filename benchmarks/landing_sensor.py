"""The landing sensor at scale: a folder of 10,000 registered files plus a backlog of 1,000 new ones.

    python benchmarks/landing_sensor.py [--files 10000 --backlog 1000 --batch 200]

Evaluates the real ``landing_sensor`` against a SQLite Dagster instance (as
the daemon does, adding the requested partitions after each tick) and prints,
per phase, the seconds per tick, the ticks needed and the cursor size. The
reference measured in the same run is the floor of any design: one
``os.scandir`` + ``stat`` of the whole folder, SHA-256 of the backlog's
bytes, and a durable copy of them (one fsync of the data, one of the folder).
Dagster gives a sensor tick 60 s by default (``DAGSTER_GRPC_TIMEOUT_SECONDS``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from fraud_assets.defs.resources import FraudSettings  # noqa: E402
from fraud_assets.defs.sensors import landing_sensor  # noqa: E402
from fraud_assets.landing import register_files  # noqa: E402
from fraud_assets.storage import Storage  # noqa: E402


def write_files(folder: Path, start: int, count: int) -> None:
    for i in range(start, start + count):
        (folder / f"export_{i:06d}.csv").write_text(
            "text,label,sent_at\n" + "".join(f"message {i}-{j} about a parcel,{j % 2},2026-03-01 10:00:00\n" for j in range(20)),
            encoding="utf-8",
        )


def tick(instance: dg.DagsterInstance, fraud: FraudSettings, cursor: str | None) -> tuple[float, dg.SensorResult]:
    started = time.perf_counter()
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"fraud": fraud})
    result = landing_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return time.perf_counter() - started, result


def listing_floor(folder: Path) -> float:
    started = time.perf_counter()
    with os.scandir(folder) as entries:
        for entry in entries:
            entry.stat(follow_symlinks=False)
    return time.perf_counter() - started


def hashing_floor(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        hashlib.sha256(path.read_bytes()).hexdigest()
    return time.perf_counter() - started


def durable_copy_floor(paths: list[Path], target: Path) -> float:
    """Copy each file with one fsync of the data and one of the folder: the least a durable archive costs."""
    target.mkdir()
    started = time.perf_counter()
    for path in paths:
        copy = target / path.name
        with copy.open("wb") as out:
            out.write(path.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - started


def drain(instance, fraud, cursor, label: str) -> tuple[str | None, list[float]]:
    """Tick until nothing is deferred; print one line for the phase."""
    times, ticks = [], 0
    while True:
        seconds, result = tick(instance, fraud, cursor)
        times.append(seconds)
        cursor, ticks = result.cursor, ticks + 1
        if '"deferred": 0' in cursor:
            break
    print(
        f"{label}: {ticks} tick(s), {sum(times):.2f} s in all, slowest tick {max(times):.2f} s, "
        f"cursor {len(cursor)} bytes ({cursor})"
    )
    return cursor, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=200, help="landing_batch_size: new files per tick")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        landing = root / "data" / "incoming"
        landing.mkdir(parents=True)
        (root / "home").mkdir()
        instance = dg.DagsterInstance.local_temp(str(root / "home"))
        fraud = FraudSettings(
            data_dir=str(root / "data"), landing_dir=str(landing), landing_settle_seconds=0, landing_batch_size=args.batch
        )

        write_files(landing, 0, args.files)
        started = time.perf_counter()  # the existing folder, registered once (what `fraud-assets ingest` would do)
        registration = register_files(Storage(root / "data", landing), set(), max_new_files=10**9, time_budget=float("inf"))
        instance.add_dynamic_partitions("message_files", [f.partition_key for f in registration.new])
        print(f"setup: {len(registration.new)} files registered in one pass in {time.perf_counter() - started:.1f} s")

        cursor, steady = drain(instance, fraud, None, f"steady state, {args.files} registered files, nothing new")
        floor = listing_floor(landing)
        print(f"  reference: scandir+stat of the folder {floor:.3f} s; tick / listing = {steady[0] / floor:.1f}x")

        write_files(landing, args.files, args.backlog)
        new_paths = sorted(landing.glob("export_*.csv"))[args.files :]
        cursor, backlog = drain(instance, fraud, cursor, f"backlog of {args.backlog} new files, batch {args.batch}")
        hashing, copying = hashing_floor(new_paths), durable_copy_floor(new_paths, root / "copies")
        print(
            f"  reference: SHA-256 of the backlog {hashing:.2f} s, durable copy (fsync file + folder) {copying:.2f} s; "
            f"all backlog ticks / durable copy = {sum(backlog) / copying:.1f}x"
        )
        partitions = len(instance.get_dynamic_partitions("message_files"))
        index = root / "data" / "archive" / "_landing_index.json"
        print(f"partitions: {partitions}; per-name index {index.stat().st_size / 1e6:.2f} MB under the storage root")


if __name__ == "__main__":
    main()
