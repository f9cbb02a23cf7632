"""Benchmark the restic_* modules against bare restic on a 1 GB synthetic dataset.

Usage, from the checkout root with the toolchain venv (`make setup` done; restic on PATH):

    .venv/bin/python bench/backup_bench.py [--size-mb 1024] [--rounds 2] [--keep]

The dataset: SIZE_MB of incompressible data in 4 MiB files plus 2,000 small files (1-16 KiB) in
nested directories, made once in a temp dir. Each round, in alternating order, on a fresh local
repository each:

  backup   bare `restic backup --json DIR` vs selfhosted.platform.restic_backup (one ansible-playbook
           task, connection local): wall time of the process, and the task's own time from the
           ansible.posix.json callback
  restore  bare `restic restore latest --target T` vs selfhosted.platform.restic_restore into an empty
           target (the module lists the snapshot, compares, restores and compares again)
  no-op    restic_restore again over the restored target (nothing differs: changed=false, no write)

Reported: medians, and module/bare ratios (the module's overhead). The restored tree is checked
byte for byte against the dataset. Results: a table on stdout and bench/results/backup_bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "backup_bench.json"
VENV_BIN = ROOT / ".venv" / "bin"
PASSWORD = "bench-" + "p" * 24


def make_dataset(top: Path, size_mb: int) -> int:
    total = 0
    big = top / "media"
    big.mkdir(parents=True)
    for i in range(max(1, size_mb // 4)):
        data = os.urandom(4 * 1024 * 1024)
        (big / f"blob-{i:04d}.bin").write_bytes(data)
        total += len(data)
    for i in range(2000):
        d = top / "docs" / f"{i % 20:02d}" / f"{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1024 * (1 + i % 16))
        (d / f"note-{i:04d}.txt").write_bytes(data)
        total += len(data)
    return total


def tree_digest(top: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(top)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def restic_env(repo: Path, pw_file: Path) -> dict:
    env = dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD_FILE=str(pw_file), RESTIC_PROGRESS_FPS="0.016")
    env.pop("RESTIC_PASSWORD", None)
    return env


def timed(argv: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if res.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return took, res


def playbook(tmp: Path, task: dict) -> tuple[float, float, dict]:
    """Run one module task on localhost; (wall, task seconds, result)."""
    book = tmp / "bench.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    took, res = timed([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(book)], env)
    data = json.loads(res.stdout)
    entry = data["plays"][0]["tasks"][0]
    start = entry["task"]["duration"]["start"]
    end = entry["task"]["duration"]["end"]
    task_s = (datetime.fromisoformat(end.replace("Z", "+00:00"))
              - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    return took, task_s, entry["hosts"]["localhost"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    restic = shutil.which("restic")
    if not restic:
        sys.exit("restic is not on PATH (make setup installs it)")
    version = subprocess.run([restic, "version"], capture_output=True, text=True, check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="shp-bench-backup-"))
    figures: dict[str, list[float]] = {k: [] for k in ("bare_backup", "module_backup", "module_backup_task",
                                                       "bare_restore", "module_restore", "module_restore_task",
                                                       "module_restore_noop")}
    try:
        pw = tmp / "password"
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
        data = tmp / "data"
        print(f"making {args.size_mb} MiB of synthetic data in {data} ...", flush=True)
        size = make_dataset(data, args.size_mb)
        digest = tree_digest(data)
        for rnd in range(1, args.rounds + 1):
            for who in (("bare", "module") if rnd % 2 else ("module", "bare")):
                repo = tmp / f"repo-{who}-{rnd}"
                env = restic_env(repo, pw)
                timed([restic, "init"], env)
                target = tmp / f"restore-{who}-{rnd}"
                if who == "bare":
                    took = timed([restic, "backup", "--json", str(data)], env)[0]
                    figures["bare_backup"].append(took)
                    took = timed([restic, "restore", "latest", "--target", str(target)], env)[0]
                    figures["bare_restore"].append(took)
                else:
                    conn = {"repository": str(repo), "password_file": str(pw)}
                    took, task_s, result = playbook(tmp, {"selfhosted.platform.restic_backup": dict(
                        conn, paths=[str(data)], tags=["bench"])})
                    assert result.get("snapshot_id"), result
                    figures["module_backup"].append(took)
                    figures["module_backup_task"].append(task_s)
                    took, task_s, result = playbook(tmp, {"selfhosted.platform.restic_restore": dict(
                        conn, target=str(target))})
                    assert result.get("changed"), result
                    figures["module_restore"].append(took)
                    figures["module_restore_task"].append(task_s)
                    took, task_s, result = playbook(tmp, {"selfhosted.platform.restic_restore": dict(
                        conn, target=str(target))})
                    assert not result.get("changed"), result
                    figures["module_restore_noop"].append(took)
                restored = target / str(data).lstrip("/")
                if tree_digest(restored) != digest:
                    sys.exit(f"round {rnd}: {who}'s restore differs from the dataset")
                shutil.rmtree(target)
                shutil.rmtree(repo)
                done = [f"{k} {v[-1]:.1f}s" for k, v in figures.items() if k.startswith(who) and v]
                print(f"round {rnd} {who}: " + ", ".join(done), flush=True)
        med = {k: statistics.median(v) for k, v in figures.items() if v}
        summary = {
            "restic": version, "dataset_bytes": size, "rounds": args.rounds, "nproc": os.cpu_count(),
            "loadavg": os.getloadavg(), "runs": figures, "median": med,
            "ratio_backup_wall": med["module_backup"] / med["bare_backup"],
            "ratio_backup_task": med["module_backup_task"] / med["bare_backup"],
            "ratio_restore_wall": med["module_restore"] / med["bare_restore"],
            "ratio_restore_task": med["module_restore_task"] / med["bare_restore"],
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
        mb = size / 1024 / 1024
        print(f"\n{version}; {mb:.0f} MiB in {args.size_mb // 4} large + 2000 small files; "
              f"{args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
        print(f"  backup   bare restic {med['bare_backup']:6.1f}s   restic_backup   {med['module_backup']:6.1f}s wall "
              f"({summary['ratio_backup_wall']:.2f}x), task {med['module_backup_task']:.1f}s "
              f"({summary['ratio_backup_task']:.2f}x)")
        print(f"  restore  bare restic {med['bare_restore']:6.1f}s   restic_restore  "
              f"{med['module_restore']:6.1f}s wall "
              f"({summary['ratio_restore_wall']:.2f}x), task {med['module_restore_task']:.1f}s "
              f"({summary['ratio_restore_task']:.2f}x)")
        print(f"  restore over an identical target (no-op, changed=false): {med['module_restore_noop']:.1f}s wall")
        print(f"results: {RESULTS.relative_to(ROOT)}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
