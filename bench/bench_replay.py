"""How fast is ``gatewatch replay``, next to merely ``orjson.loads``-ing the same lines?

    .venv/bin/python bench/bench_replay.py                 # 2 million lines, gateway log as JSON and as text
    .venv/bin/python bench/bench_replay.py --lines 200000 --profile

Generates demo runs with the project's own generator (the gateway log as JSON,
and the same requests with it as text; the app log is JSON in both), cached in
``bench/.data/`` by parameters, then measures, each in a fresh subprocess
pinned to one core (``taskset``):

1. ``orjson.loads`` over every line of the JSON run: the loads loop alone
   (lines already in memory) and a read-and-loads loop;
2. per format, ``replay()`` in-process with ``--store none`` sinks (alerts and
   dead-letter files, as the CLI opens them), timed from after imports and
   config load to after the sinks are closed;
3. the same with a DuckDB store;
4. the bytes held per event in the reorder buffer and per open request in the
   join, half way through the files (``sys.getsizeof`` over what they reach);
5. the whole ``gatewatch replay`` command, ``--store none`` and ``duckdb:``,
   timed from the outside (interpreter start, imports, summary print included).

Rates are per CPU second of the child (per core), which a loaded machine
disturbs far less than wall time; both are printed. Peak RSS is each child's
own ``ru_maxrss`` (``os.wait4``). ``--profile`` adds a cProfile run of (2).
``--repeat N`` runs 1-3 in N interleaved rounds and reports each one's fastest
run, with every run's CPU seconds beside it: on a machine whose speed wanders
(one saw orjson.loads of the same lines take 0.39-0.81 s), the fastest runs
are the ones to compare.

Aims (issue 15): ``--store none`` >= 30 MiB/s per core (the standing aim:
>= 100k events/s, <= 4x the bare parse), DuckDB >= 0.7x of ``--store none``,
<= 1 KB per buffered event. The script reports what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
LINES_PER_REQUEST = 2.93  # measured on the demo generator (json, attacks on): 2.93-2.97
MIN_DURATION_SECS = 600.0
AIM_MIB_PER_SEC = 30
AIM_EVENTS_PER_SEC = 100_000
AIM_RATIO = 4.0
AIM_DUCKDB_RATIO = 0.7
AIM_BYTES_PER_BUFFERED = 1024
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
    start, cpu_start = time.perf_counter(), time.process_time()
    for line in held:
        try:
            loads(line)
        except orjson.JSONDecodeError:
            bad2 += 1
    loads_secs = time.perf_counter() - start
    loads_cpu_secs = time.process_time() - cpu_start
    return {"lines": lines, "bad": bad, "bad_loads_only": bad2, "read_loads_secs": read_loads_secs,
            "read_secs": read_secs, "loads_secs": loads_secs, "loads_cpu_secs": loads_cpu_secs,
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
    start, cpu_start = time.perf_counter(), time.process_time()
    stats = replay(config, [Path(spec["gateway"])], [Path(spec["app"])], sinks)
    replay_secs = time.perf_counter() - start
    for sink in sinks:
        sink.close()
    close_secs = time.perf_counter() - start - replay_secs
    cpu_secs = time.process_time() - cpu_start
    result = {"import_secs": import_secs, "setup_secs": setup_secs, "replay_secs": replay_secs,
              "close_secs": close_secs, "replay_cpu_secs": cpu_secs, "records_in": stats.records_in, "events": stats.events,
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


def _child_memory(spec: dict) -> dict:
    """Bytes held per event in the reorder buffer and per open request in the join, half way through.

    Drives a Pipeline the way ``replay()`` does until half the lines are in, then
    walks what the two structures hold with ``sys.getsizeof``, each object once.
    Objects every record shares (dataset members, a file's name) are not counted.
    """
    from itertools import chain, islice

    from gatewatch.config import load_config
    from gatewatch.replay import CHUNK_RECORDS
    from gatewatch.topology import Pipeline, tune_gc_for_streaming
    from ingest.records import Dataset
    from ingest.sources.files import read_lines

    config = load_config(Path(spec["config"]))
    tune_gc_for_streaming()
    pipeline = Pipeline(config)
    readers = {}
    for dataset, path, section in ((Dataset.GATEWAY, spec["gateway"], config.gateway),
                                   (Dataset.APP, spec["app"], config.app)):  # fmt: skip
        lines = read_lines(Path(path), dataset, section.max_line_bytes, section.unwrap)
        first = next(lines)  # opened under its records' stream name (a tree before session 21: the path as given)
        readers[first.origin.stream] = chain([first], lines)
        pipeline.open_stream(first.origin.stream)
    fed, stop = 0, spec["lines"] // 2
    while fed < stop:
        stream = min(readers, key=pipeline.stream_clock)
        chunk = list(islice(readers[stream], CHUNK_RECORDS))
        pipeline.feed(chunk)
        pipeline.process()
        pipeline.drain()
        fed += len(chunk)
    shared = {id(x) for x in (*Dataset, *readers, None, True, False)}
    order_bytes = _deep_size(pipeline.order._heap, set(shared))
    correlator = pipeline.correlator
    join_bytes = _deep_size((correlator._groups, correlator._deadlines), set(shared))
    buffered, open_requests = len(pipeline.order), len(correlator)
    return {"buffered_events": buffered, "order_bytes": order_bytes, "open_requests": open_requests,
            "join_bytes": join_bytes, "join_events": sum(len(g.gateway) + len(g.app) for g in correlator._groups.values())}  # fmt: skip


def _deep_size(root: object, seen: set[int]) -> int:
    size, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float)):
            struct_fields = getattr(type(obj), "__struct_fields__", None)  # a msgspec Struct's, in a tuple
            names = struct_fields if isinstance(struct_fields, tuple) else [
                name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())]
            for name in names:
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
    return size


# --------------------------------------------------------------------------- parent


def _cpu_secs(result: dict) -> float:
    return result.get("replay_cpu_secs", result.get("loads_cpu_secs", result.get("cpu_secs", 0.0)))


def _fastest(tried: list[dict]) -> dict:
    """The run of a step with the least CPU time; a failure if every run failed."""
    done = [r for r in tried if "failed" not in r]
    return min(done, key=_cpu_secs) if done else tried[-1]


def _print_paired(runs: dict[str, list[dict]], formats: list[str]) -> None:
    """The ratios of the aims taken within each round, where the table pairs each row's fastest run.

    On a shared machine a core's speed moved 1.5-2x between runs (orjson.loads of the same lines:
    0.33 to 0.72 s in one evening), so a row's fastest run and the baseline's may come from
    different minutes. A round's runs are seconds apart; the spread of its ratios shows how far
    the machine moved even then.
    """
    loads = runs.get("orjson.loads", [])
    print("\npaired within each round (median, then every round):")
    for fmt in formats:
        none = runs.get(f"{fmt}: replay none (in-process)", [])
        duck = runs.get(f"{fmt}: replay duckdb (in-process)", [])
        x_loads = [_cpu_secs(n) / _cpu_secs(b) for n, b in zip(none, loads) if _done(n, b)]
        # the same events either way: the ratio of the rates is the inverse ratio of the CPU seconds
        duck_ratio = [_cpu_secs(n) / _cpu_secs(d) for n, d in zip(none, duck) if _done(n, d)]
        for label, ratios in ((f"x loads (aim <= {AIM_RATIO:g}x)", x_loads),
                              (f"duckdb / none (aim >= {AIM_DUCKDB_RATIO}x)", duck_ratio)):  # fmt: skip
            if ratios:
                listed = ", ".join(f"{r:.2f}" for r in ratios)
                print(f"  {fmt}: {label:<30} {statistics.median(ratios):.2f}  ({listed})")


def _done(*results: dict) -> bool:
    return not any("failed" in r for r in results)


def dataset(lines: int, rate: float, seed: int, fresh: bool, fmt: str = "json") -> tuple[Path, dict]:
    """The cached demo run for ``lines`` with the gateway log in ``fmt`` (generated if missing), and its expected.json."""
    requests = lines / LINES_PER_REQUEST
    duration = max(MIN_DURATION_SECS, round(requests / rate))
    rate = round(requests / duration, 3)
    folder = DATA / f"{fmt}-seed{seed}-dur{duration:g}-rate{rate:g}"
    done = folder / ".complete"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    if not done.exists():
        from gatewatch.demo.files import write_demo

        print(f"generating {lines:,} lines: {duration:g} s at {rate:g} req/s, seed {seed} -> {folder}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        write_demo(folder, seed=seed, duration_secs=float(duration), requests_per_sec=rate, gateway_format=fmt)
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


def interpreter_build() -> str:
    """What of the interpreter's build moves every row but the loads loop: its configure flags, a shared libpython.

    This machine's ``python3`` (pyenv's 3.11.7: a shared libpython, no PGO or LTO) replayed 6-7%
    slower than Debian's ``/usr/bin/python3.11`` (a static executable) on the same tree (bench/README).
    """
    args = sysconfig.get_config_var("CONFIG_ARGS") or ""
    flags = [flag for flag in ("--enable-optimizations", "--with-lto") if flag in args] or ["no --enable-optimizations"]
    try:
        shared = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libpython" in line]
    except OSError:
        return ", ".join(flags)
    return ", ".join(flags) + (f", libpython shared ({shared[0]})" if shared else ", static executable")


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
        f"python {platform.python_version()} ({sys.executable}: {interpreter_build()}); {versions}",
        f"thread env: {threads or 'none of ' + '/'.join(THREAD_ENV[:3]) + '... set'}",
        f"git {rev.stdout.strip() or '?'}{' (dirty tree)' if dirty.stdout.strip() else ''}; {pin}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines to generate, both files (default 2M)")
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s of the generated traffic")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--formats", default="json,text", help="gateway log formats to run, comma-separated")
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
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the timed children N rounds, interleaved, and report each one's fastest run "
                             "(CPU seconds); for a noisy machine")  # fmt: skip
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec = args.child
        children = {"baseline": _child_baseline, "pipeline": _child_pipeline, "memory": _child_memory}
        result = children[kind](json.loads(spec))
        print(json.dumps(result))
        return 0

    facts_load = os.getloadavg()
    prefix, pin = pinning(args.core, not args.no_pin)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    data = {fmt: dataset(args.lines, args.rate, args.seed, args.regenerate, fmt) for fmt in {"json", *formats}}
    print()
    facts = machine_facts(pin)
    facts[1] = f"load average before the run: {' '.join(f'{x:.2f}' for x in facts_load)}"
    print("\n".join(facts))
    for fmt, (folder, expected) in data.items():
        print(f"data ({fmt}): {(folder / 'gateway.log').stat().st_size / 1e6:.0f} MB gateway + "
              f"{(folder / 'app.log').stat().st_size / 1e6:.0f} MB app; expected records {expected['records']}")  # fmt: skip
        for path in (folder / "gateway.log", folder / "app.log"):  # warm the page cache for the first child
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass

    results: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)

        def step(name: str, fn) -> None:
            print(f"  {name} ...", end=" ", flush=True)
            try:
                r = fn()
            except ChildFailed as error:
                r = {"failed": str(error)}
                print(f"FAILED: {error}\n{error.stderr[-2500:]}", flush=True)
            else:
                print(f"{r.get('replay_secs', r.get('loads_secs', r['wall_secs'])):.2f} s", flush=True)
            runs.setdefault(name, []).append(r)
            results[name] = _fastest(runs[name])

        def files(fmt: str) -> dict:
            folder = data[fmt][0]
            return {"config": str(folder / "gatewatch.yaml"), "gateway": str(folder / "gateway.log"),
                    "app": str(folder / "app.log")}  # fmt: skip

        def pipeline(fmt: str, store: str, out: str, profile: bool = False, config: Path | None = None) -> dict:
            spec = {**files(fmt), "store": store, "out": str(work / out), "profile": profile, "top": args.top}
            if config is not None:
                spec["config"] = str(config)
            return child(prefix, "pipeline", spec)

        def cli(fmt: str, store: str, out: str) -> dict:
            exe = Path(sys.executable).with_name("gatewatch")
            spec = files(fmt)
            argv = [str(exe) if exe.exists() else shutil.which("gatewatch") or "gatewatch", "replay",
                    "--config", spec["config"], "--gateway", spec["gateway"], "--app", spec["app"],
                    "--alerts-out", str(work / out / "alerts.ndjson"), "--store", store]  # fmt: skip
            run = run_child(prefix, argv, env={**os.environ, "COLUMNS": "400"})
            found = re.search(r"records (\d+)\s+events (\d+)", run["stdout"] + run["stderr"])
            if found:
                run["records_in"], run["events"] = int(found[1]), int(found[2])
            return run

        json_files = files("json")
        for round_ in range(max(args.repeat, 1)):
            if args.repeat > 1:
                print(f"round {round_ + 1} of {args.repeat}")
            step("orjson.loads",
                 lambda: child(prefix, "baseline", {"paths": [json_files["gateway"], json_files["app"]]}))  # fmt: skip
            for fmt in formats:
                step(f"{fmt}: replay none (in-process)", lambda: pipeline(fmt, "none", f"{fmt}-none-{round_}"))
                if not args.no_duckdb:
                    duck = f"duckdb:{work / f'{fmt}-a{round_}.duckdb'}"
                    step(f"{fmt}: replay duckdb (in-process)", lambda: pipeline(fmt, duck, f"{fmt}-duck-{round_}"))
        for fmt in formats:
            step(f"{fmt}: memory", lambda: child(prefix, "memory", {**files(fmt), "lines": args.lines}))
            if not args.no_cli:
                step(f"{fmt}: gatewatch replay --store none", lambda: cli(fmt, "none", f"{fmt}-cli-none"))
                if not args.no_duckdb:
                    duck = f"duckdb:{work / f'{fmt}-b.duckdb'}"
                    step(f"{fmt}: gatewatch replay --store duckdb", lambda: cli(fmt, duck, f"{fmt}-cli-duck"))
            if args.profile:
                step(f"{fmt}: replay none (cProfile)", lambda: pipeline(fmt, "none", f"{fmt}-prof", profile=True))
        if args.redact_off:
            import yaml

            config = Path(files("json")["config"])
            no_redact = config.with_name("gatewatch-no-redact.yaml")  # beside the config: its paths are relative
            no_redact.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "redact": {"enabled": False}}))
            step("json: replay none, redact off (in-process)", lambda: pipeline("json", "none", "off1", config=no_redact))
            step("json: replay none, again (in-process)", lambda: pipeline("json", "none", "on2"))
            step("json: replay none, redact off, again (in-process)",
                 lambda: pipeline("json", "none", "off2", config=no_redact))  # fmt: skip

    if args.json:
        slim = {k: {f: v for f, v in r.items() if f not in ("stdout", "stderr")} for k, r in results.items()}
        args.json.write_text(json.dumps({"facts": facts, "data": {f: str(d[0]) for f, d in data.items()},
                                         "results": slim}, indent=2))  # fmt: skip
    if args.repeat > 1:
        print(f"\nbest of {args.repeat} rounds each (CPU seconds of every run: fastest .. slowest):")
        for name, tried in runs.items():
            cpus = sorted(_cpu_secs(r) for r in tried if "failed" not in r)
            if len(cpus) > 1:
                print(f"  {name:<50} {cpus[0]:.2f} .. {cpus[-1]:.2f}  ({', '.join(f'{c:.2f}' for c in cpus)})")
        _print_paired(runs, formats)
    base = results["orjson.loads"]
    if "failed" in base:
        sys.exit("the orjson baseline failed; nothing to compare against")
    loads_cpu = base["loads_cpu_secs"]
    mib = 1024 * 1024
    print(f"\nPer core = per CPU second of the child (time.process_time in-process, rusage for whole commands),\n"
          f"so the figures hold on a loaded machine; wall seconds beside them. x loads = CPU seconds / the CPU\n"
          f"seconds of orjson.loads over the JSON run's {base['lines']:,} lines held in memory ({loads_cpu:.2f} s, "
          f"{base['bytes'] / mib / loads_cpu:.0f} MiB/s, {base['lines'] / loads_cpu:,.0f} lines/s); the text run has "
          f"the same requests, its gateway lines in text.")  # fmt: skip
    header = (f"{'mode':<52} {'lines':>9} {'wall s':>7} {'CPU s':>7} {'MiB/s/core':>10} {'events/s/core':>13} "
              f"{'x loads':>7} {'RSS MB':>7} {'load1':>6}")  # fmt: skip
    print(header)
    print(f"{'orjson.loads (json lines in memory)':<52} {base['lines']:>9,} {base['loads_secs']:>7.2f} "
          f"{loads_cpu:>7.2f} {base['bytes'] / mib / loads_cpu:>10.1f} {'-':>13} {1:>7.2f} {base['rss_mb']:>7.0f} "
          f"{base['load1_before']:>6.2f}")  # fmt: skip
    status = 0
    for fmt in formats:
        folder = data[fmt][0]
        nbytes = (folder / "gateway.log").stat().st_size + (folder / "app.log").stat().st_size
        for name, r in results.items():
            if not name.startswith(f"{fmt}: ") or "cProfile" in name or "memory" in name:
                continue
            if "failed" in r:
                print(f"{name + ' FAILED':<52}")
                status = 1
                continue
            inproc = "replay_secs" in r
            wall = r["replay_secs"] + r["close_secs"] if inproc else r["wall_secs"]
            cpu = r["replay_cpu_secs"] if inproc else r["cpu_secs"]
            events = r.get("events")
            print(f"{name + (' [replay+close]' if inproc else ' [whole cmd]'):<52} {r.get('records_in', 0):>9,} "
                  f"{wall:>7.2f} {cpu:>7.2f} {nbytes / mib / cpu:>10.1f} "
                  f"{(f'{events / cpu:,.0f}' if events else '-'):>13} {cpu / loads_cpu:>7.2f} {r['rss_mb']:>7.0f} "
                  f"{r['load1_before']:>6.2f}")  # fmt: skip

    for fmt in formats:
        none = results.get(f"{fmt}: replay none (in-process)", {"failed": "not run"})
        if "failed" in none:
            continue
        cpu = none["replay_cpu_secs"]
        rate, ratio = none["events"] / cpu, cpu / loads_cpu
        folder = data[fmt][0]
        nbytes = (folder / "gateway.log").stat().st_size + (folder / "app.log").stat().st_size
        print(f"\n{fmt}: import {none['import_secs']:.2f} s, config+sinks {none['setup_secs']:.2f} s (not timed); "
              f"events {none['events']:,}, transactions {none['transactions']:,}, dead letters "
              f"{none['dead_letters']}; {nbytes / none['records_in']:.0f} bytes a line")  # fmt: skip
        duck = results.get(f"{fmt}: replay duckdb (in-process)")
        if duck and "failed" not in duck:
            duck_rate = duck["events"] / duck["replay_cpu_secs"]
            print(f"{fmt}: duckdb store {duck_rate:,.0f} events/s/core = {duck_rate / rate:.2f}x --store none "
                  f"(aim >= {AIM_DUCKDB_RATIO}x); wall {duck['replay_secs'] + duck['close_secs']:.1f} s")  # fmt: skip
        mem = results.get(f"{fmt}: memory")
        if mem and "failed" not in mem:
            per_event = mem["order_bytes"] / max(mem["buffered_events"], 1)
            print(f"{fmt}: memory half way: reorder buffer {mem['buffered_events']:,} events, {per_event:,.0f} B each "
                  f"(aim <= {AIM_BYTES_PER_BUFFERED:,}); join {mem['open_requests']:,} open requests holding "
                  f"{mem['join_events']:,} events, {mem['join_bytes'] / max(mem['open_requests'], 1):,.0f} B per "
                  f"request")  # fmt: skip
        mibs = nbytes / mib / cpu
        print(f"{fmt}: aim --store none >= {AIM_MIB_PER_SEC} MiB/s per core: "
              f"{'MET' if mibs >= AIM_MIB_PER_SEC else 'NOT MET'} ({mibs:.1f}); >= {AIM_EVENTS_PER_SEC:,} events/s: "
              f"{'MET' if rate >= AIM_EVENTS_PER_SEC else 'NOT MET'} ({rate:,.0f}); <= {AIM_RATIO:g}x loads: "
              f"{'MET' if ratio <= AIM_RATIO else 'NOT MET'} ({ratio:.1f}x)")  # fmt: skip

    for fmt in formats:
        prof = results.get(f"{fmt}: replay none (cProfile)")
        if prof and "failed" not in prof:
            print(f"\n{fmt}: cProfile, replay --store none in-process (profiled replay {prof['replay_secs']:.1f} s):")
            print(prof["profile"].strip("\n"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
