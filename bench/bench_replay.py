"""How fast is ``gatewatch replay``, next to merely ``orjson.loads``-ing the same lines?

    .venv/bin/python bench/bench_replay.py                 # 2 million lines
    .venv/bin/python bench/bench_replay.py --lines 200000 --profile

Generates a demo run with the project's own generator (gateway log as JSON, so
every line of both files is JSON), cached in ``bench/.data/`` by parameters,
then measures, each in a fresh subprocess pinned to one core (``taskset``):

1. ``orjson.loads`` over every line of both files: the loads loop alone (lines
   already in memory) and a read-and-loads loop;
2. ``replay()`` in-process with ``--store none`` sinks (alerts and dead-letter
   files, as the CLI opens them), timed from after imports and config load to
   after the sinks are closed;
3. the same with a DuckDB store;
4. the whole ``gatewatch replay`` command, ``--store none`` and ``duckdb:``,
   timed from the outside (interpreter start, imports, summary print included).

Peak RSS is each child's own ``ru_maxrss`` (``os.wait4``: the same figure
``getrusage(RUSAGE_CHILDREN)`` gives in a parent that waited for that one child).
``--profile`` adds a cProfile run of (2) and prints the top functions by tottime;
its timings are not used in the table.

Aim (the core issue): ``--store none`` at >= 100k events/s on one core and no
more than 4x the cost of the bare parse. The script reports what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
LINES_PER_REQUEST = 2.93  # measured on the demo generator (json, attacks on): 2.93-2.97
MIN_DURATION_SECS = 600.0
AIM_EVENTS_PER_SEC = 100_000
AIM_RATIO = 4.0
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OPENBLAS_MAIN_FREE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")  # fmt: skip


# --------------------------------------------------------------------------- children
# Run as ``bench_replay.py --child KIND JSON``; print one JSON object as the last stdout line.
# Module-level imports are stdlib only, so the baseline child never imports gatewatch.


def _child_baseline(spec: dict) -> dict:
    import orjson

    loads = orjson.loads
    paths = spec["paths"]
    # Read + loads, streaming (lines never all in memory).
    lines = bad = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                lines += 1
                try:
                    loads(line)
                except orjson.JSONDecodeError:
                    bad += 1
    read_loads_secs = time.perf_counter() - start
    # Loads alone: read everything first, then time only the loop.
    start = time.perf_counter()
    held: list[bytes] = []
    for path in paths:
        with open(path, "rb") as handle:
            held.extend(handle)
    read_secs = time.perf_counter() - start
    bad2 = 0
    start = time.perf_counter()
    for line in held:
        try:
            loads(line)
        except orjson.JSONDecodeError:
            bad2 += 1
    loads_secs = time.perf_counter() - start
    return {"lines": lines, "bad": bad, "bad_loads_only": bad2, "read_loads_secs": read_loads_secs,
            "read_secs": read_secs, "loads_secs": loads_secs,
            "bytes": sum(os.path.getsize(p) for p in paths)}  # fmt: skip


def _child_pipeline(spec: dict) -> dict:
    start = time.perf_counter()
    from gatewatch.config import load_config
    from gatewatch.replay import replay
    from gatewatch.stores import open_store
    from ingest.sinks.ndjson import AlertFile, DeadLetterFile

    import_secs = time.perf_counter() - start
    start = time.perf_counter()
    config = load_config(Path(spec["config"]))
    out = Path(spec["out"])
    store = open_store(spec["store"], config)
    sinks = [s for s in (store, AlertFile(out / "alerts.ndjson"), DeadLetterFile(out / "dead-letters.ndjson")) if s]
    setup_secs = time.perf_counter() - start
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    stats = replay(config, [Path(spec["gateway"])], [Path(spec["app"])], sinks)
    replay_secs = time.perf_counter() - start
    for sink in sinks:
        sink.close()
    close_secs = time.perf_counter() - start - replay_secs
    result = {"import_secs": import_secs, "setup_secs": setup_secs, "replay_secs": replay_secs,
              "close_secs": close_secs, "records_in": stats.records_in, "events": stats.events,
              "transactions": stats.transactions, "dead_letters": stats.dead_letters}  # fmt: skip
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        stats_view = pstats.Stats(profiler, stream=text).strip_dirs()
        stats_view.sort_stats("tottime").print_stats(spec["top"])
        stats_view.sort_stats("cumulative").print_stats(spec["top"])
        result["profile"] = text.getvalue()
    return result


# --------------------------------------------------------------------------- parent


def dataset(lines: int, rate: float, seed: int, fresh: bool) -> tuple[Path, dict]:
    """The cached demo run for ``lines`` (generated if missing), and its expected.json."""
    requests = lines / LINES_PER_REQUEST
    duration = max(MIN_DURATION_SECS, round(requests / rate))
    rate = round(requests / duration, 3)
    folder = DATA / f"json-seed{seed}-dur{duration:g}-rate{rate:g}"
    done = folder / ".complete"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    if not done.exists():
        from gatewatch.demo.files import write_demo

        print(f"generating {lines:,} lines: {duration:g} s at {rate:g} req/s, seed {seed} -> {folder}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        write_demo(folder, seed=seed, duration_secs=float(duration), requests_per_sec=rate, gateway_format="json")
        done.write_text("")
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    else:
        print(f"using cached {folder}", flush=True)
    return folder, json.loads((folder / "expected.json").read_bytes())


def pinning(core: int, enabled: bool) -> tuple[list[str], str]:
    """The command prefix that pins a child to one core, and a description of it."""
    if not enabled:
        return [], "not pinned (--no-pin)"
    taskset = shutil.which("taskset")
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None:
        return [], "not pinned (no taskset)"
    if allowed and core not in allowed:
        core = allowed[-1]
    if subprocess.run([taskset, "-c", str(core), "true"], capture_output=True).returncode != 0:
        return [], "not pinned (taskset failed)"
    return [taskset, "-c", str(core)], f"pinned: taskset -c {core}"


class ChildFailed(Exception):
    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


def run_child(prefix: list[str], argv: list[str], env: dict | None = None) -> dict:
    """Run ``argv`` once; wall time, its own peak RSS and CPU time, and its last stdout line."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load1 = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(prefix + argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["?"])[-1]
        raise ChildFailed(f"exit {proc.returncode} after {wall:.1f} s: {last}", stderr)
    return {"wall_secs": wall, "rss_mb": usage.ru_maxrss / 1024, "cpu_secs": usage.ru_utime + usage.ru_stime,
            "load1_before": load1, "stdout": stdout, "stderr": stderr}  # fmt: skip


def child(prefix: list[str], kind: str, spec: dict) -> dict:
    run = run_child(prefix, [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)])
    return {**run, **json.loads(run["stdout"].strip().splitlines()[-1])}


def machine_facts(pin: str) -> list[str]:
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        import duckdb
        import orjson

        versions = f"orjson {orjson.__version__}, duckdb {duckdb.__version__}"
    except ImportError as error:
        versions = str(error)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    threads = {k: os.environ[k] for k in THREAD_ENV if k in os.environ}
    return [
        f"nproc {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}), cpu {cpu or platform.processor()}",
        f"load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()} ({sys.executable}); {versions}",
        f"thread env: {threads or 'none of ' + '/'.join(THREAD_ENV[:3]) + '... set'}",
        f"git {rev.stdout.strip() or '?'}{' (dirty tree)' if dirty.stdout.strip() else ''}; {pin}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines to generate, both files (default 2M)")
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s of the generated traffic")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--core", type=int, default=1, help="core to pin children to")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-duckdb", action="store_true")
    parser.add_argument("--no-cli", action="store_true", help="skip the whole-command runs")
    parser.add_argument("--profile", action="store_true", help="also cProfile the in-process --store none run")
    parser.add_argument("--redact-off", action="store_true",
                        help="also run the in-process --store none replay with redact.enabled false, twice, "
                        "alternating with the default, so the cost of redaction reads from one run")
    parser.add_argument("--top", type=int, default=15, help="profile rows")
    parser.add_argument("--regenerate", action="store_true", help="ignore the cached data")
    parser.add_argument("--json", type=Path, help="also write all figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec = args.child
        result = (_child_baseline if kind == "baseline" else _child_pipeline)(json.loads(spec))
        print(json.dumps(result))
        return 0

    facts_load = os.getloadavg()
    prefix, pin = pinning(args.core, not args.no_pin)
    folder, expected = dataset(args.lines, args.rate, args.seed, args.regenerate)
    gateway, app, config = folder / "gateway.log", folder / "app.log", folder / "gatewatch.yaml"
    print()
    facts = machine_facts(pin)
    facts[1] = f"load average before the run: {' '.join(f'{x:.2f}' for x in facts_load)}"
    print("\n".join(facts))
    print(f"data: {gateway.stat().st_size / 1e6:.0f} MB gateway + {app.stat().st_size / 1e6:.0f} MB app; "
          f"expected records {expected['records']}", flush=True)  # fmt: skip
    for path in (gateway, app):  # warm the page cache so the first child does not pay for the disk
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)

        def step(name: str, fn) -> None:
            print(f"  {name} ...", end=" ", flush=True)
            try:
                results[name] = fn()
            except ChildFailed as error:
                results[name] = {"failed": str(error)}
                print(f"FAILED: {error}\n{error.stderr[-2500:]}", flush=True)
                return
            r = results[name]
            print(f"{r.get('replay_secs', r.get('loads_secs', r['wall_secs'])):.2f} s", flush=True)

        def pipeline(store: str, out: str, profile: bool = False, config: Path = config) -> dict:
            spec = {"config": str(config), "gateway": str(gateway), "app": str(app), "store": store,
                    "out": str(work / out), "profile": profile, "top": args.top}  # fmt: skip
            return child(prefix, "pipeline", spec)

        def cli(store: str, out: str) -> dict:
            exe = Path(sys.executable).with_name("gatewatch")
            argv = [str(exe) if exe.exists() else shutil.which("gatewatch") or "gatewatch", "replay",
                    "--config", str(config), "--gateway", str(gateway), "--app", str(app),
                    "--alerts-out", str(work / out / "alerts.ndjson"), "--store", store]  # fmt: skip
            run = run_child(prefix, argv, env={**os.environ, "COLUMNS": "400"})
            found = re.search(r"records (\d+)\s+events (\d+)", run["stdout"] + run["stderr"])
            if found:
                run["records_in"], run["events"] = int(found[1]), int(found[2])
            return run

        step("orjson.loads", lambda: child(prefix, "baseline", {"paths": [str(gateway), str(app)]}))
        step("replay none (in-process)", lambda: pipeline("none", "none"))
        if not args.no_duckdb:
            step("replay duckdb (in-process)", lambda: pipeline(f"duckdb:{work / 'a.duckdb'}", "duck"))
        if not args.no_cli:
            step("gatewatch replay --store none", lambda: cli("none", "cli-none"))
            if not args.no_duckdb:
                step("gatewatch replay --store duckdb", lambda: cli(f"duckdb:{work / 'b.duckdb'}", "cli-duck"))
        if args.redact_off:
            import yaml

            no_redact = folder / "gatewatch-no-redact.yaml"  # beside the config: its paths are relative
            no_redact.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "redact": {"enabled": False}}))
            step("replay none, redact off (in-process)", lambda: pipeline("none", "off1", config=no_redact))
            step("replay none, again (in-process)", lambda: pipeline("none", "on2"))
            step("replay none, redact off, again (in-process)", lambda: pipeline("none", "off2", config=no_redact))
        if args.profile:
            step("replay none (cProfile)", lambda: pipeline("none", "prof", profile=True))

    if args.json:
        slim = {k: {f: v for f, v in r.items() if f not in ("stdout", "stderr")} for k, r in results.items()}
        args.json.write_text(json.dumps({"facts": facts, "data": str(folder), "results": slim}, indent=2))
    base = results["orjson.loads"]
    if "failed" in base:
        sys.exit("the orjson baseline failed; nothing to compare against")
    loads_secs = base["loads_secs"]
    rows = [("orjson.loads (lines in memory)", base["lines"], None, loads_secs, base["rss_mb"], base["load1_before"]),
            ("read + orjson.loads", base["lines"], None, base["read_loads_secs"], None, None)]  # fmt: skip
    for name, r in results.items():
        if name == "orjson.loads" or "cProfile" in name:
            continue
        if "failed" in r:
            rows.append((name + " FAILED", None, None, None, None, None))
            continue
        inproc = "replay_secs" in r
        secs = r["replay_secs"] + r["close_secs"] if inproc else r["wall_secs"]
        label = name + (" [replay+close]" if inproc else " [whole cmd]")
        rows.append((label, r.get("records_in", base["lines"]), r.get("events"), secs, r["rss_mb"], r["load1_before"]))

    print()
    print(f"{'mode':<60} {'lines':>10} {'secs':>8} {'lines/s':>10} {'events/s':>10} {'x loads':>8} {'RSS MB':>8} "
          f"{'load1':>6}")  # fmt: skip
    for label, lines, events, secs, rss, load1 in rows:
        if secs is None:
            print(f"{label:<60} {'-':>10} {'-':>8} {'-':>10} {'-':>10} {'-':>8} {'-':>8} {'-':>6}")
            continue
        print(f"{label:<60} {lines:>10,} {secs:>8.2f} {lines / secs:>10,.0f} "
              f"{(f'{events / secs:,.0f}' if events else '-'):>10} {secs / loads_secs:>8.2f} "
              f"{(f'{rss:.0f}' if rss else '-'):>8} {(f'{load1:.2f}' if load1 is not None else '-'):>6}")  # fmt: skip
    print(f"(x loads = seconds / orjson.loads-loop seconds {loads_secs:.2f}; loads-only loop holds every line in "
          f"memory, hence its RSS; {base['bad']} lines not JSON; read alone {base['read_secs']:.2f} s)")  # fmt: skip

    for name, r in results.items():
        if "failed" in r:
            print(f"{name} FAILED: {r['failed']}")
    none = results["replay none (in-process)"]
    if "failed" in none:
        return 1
    secs = none["replay_secs"] + none["close_secs"]
    rate, ratio = none["events"] / secs, secs / loads_secs
    print(f"\nin-process extra: import {none['import_secs']:.2f} s, config+sinks {none['setup_secs']:.2f} s, "
          f"close {none['close_secs']:.2f} s; events {none['events']:,}, transactions {none['transactions']:,}, "
          f"dead letters {none['dead_letters']}; CPU secs of the child {none['cpu_secs']:.1f} "
          f"(wall {none['wall_secs']:.1f})")  # fmt: skip
    duck = results.get("replay duckdb (in-process)")
    if duck and "failed" not in duck:
        print(f"duckdb in-process: replay {duck['replay_secs']:.2f} s + close {duck['close_secs']:.2f} s")
    print(f"aim --store none >= {AIM_EVENTS_PER_SEC:,} events/s: {'MET' if rate >= AIM_EVENTS_PER_SEC else 'NOT MET'}"
          f" ({rate:,.0f}, {rate / AIM_EVENTS_PER_SEC:.0%} of aim)")  # fmt: skip
    print(f"aim <= {AIM_RATIO:g}x orjson.loads: {'MET' if ratio <= AIM_RATIO else 'NOT MET'} ({ratio:.1f}x)")

    if args.profile and "failed" not in results["replay none (cProfile)"]:
        print("\ncProfile, replay --store none in-process, top by tottime "
              f"(profiled replay {results['replay none (cProfile)']['replay_secs']:.1f} s):")  # fmt: skip
        print(results["replay none (cProfile)"]["profile"].strip("\n"))
    return 1 if any("failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
