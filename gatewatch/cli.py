"""The ``gatewatch`` command: replay, demo, serve, report, resend, schema.

The command names and flags here are a contract other tools rely on.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from gatewatch import installed_version
from gatewatch.errors import GatewatchError
from ingest.escape import visible
from ingest.redact import build_redactor
from ingest.redact_logs import LOG_FILTER, install_log_redaction

console = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    verbose = args.verbose or getattr(args, "service", False)  # a service logs what it does
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        # kafka-python narrates every connection at INFO, in its own format: a service's log is its key=value lines.
        logging.getLogger("kafka").setLevel(logging.WARNING)
        logging.getLogger("kafka.net.selector").addFilter(_not_a_slow_task)
    install_log_redaction()
    try:
        return int(args.run(args) or 0)
    except GatewatchError as error:
        _print_error(LOG_FILTER.redactor.redact(str(error)))
        return 2
    except OSError as error:  # a file named on the command line that cannot be read or written
        _print_error(LOG_FILTER.redactor.redact(f"{error.filename}: {error.strerror}" if error.filename else str(error)))
        return 2
    except KeyboardInterrupt:
        return 130


def _print_error(message: str) -> None:
    # One line, whatever the message holds: it may quote a file name or a value from the user.
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    console.print(Text.assemble(("error:", "red"), " ", visible(text)), soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewatch", description="Security log pipeline for Envoy/Ambassador.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    parser.add_argument("--version", action="version", version=f"gatewatch {installed_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="run the pipeline over log files (plain or .gz)")
    replay.add_argument("--config", type=Path, help="YAML config file (default: all defaults)")
    replay.add_argument("--gateway", type=Path, nargs="+", default=[], metavar="PATH", help="gateway access logs")
    replay.add_argument("--app", type=Path, nargs="+", default=[], metavar="PATH", help="Billing app logs")
    replay.add_argument("--alerts-out", type=Path, required=True, metavar="FILE",
                        help="alerts as NDJSON; - for stdout (the summary goes to stderr)")  # fmt: skip
    replay.add_argument(
        "--dead-letters",
        type=Path,
        metavar="FILE",
        help="unparseable records as NDJSON; - for stdout (default: next to --alerts-out, *.dead-letters.ndjson)",
    )
    replay.add_argument("--store", help="duckdb:PATH, elasticsearch:URL, opensearch:URL or none (default: config)")
    replay.set_defaults(run=_run_replay)

    demo = commands.add_parser("demo", help="generate traffic with injected attacks and detect them")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for logs, store and alerts")
    demo.add_argument("--minutes", type=float, default=30.0,
                      help="minutes of traffic to generate (at least 10: the attacks need them)")  # fmt: skip
    demo.add_argument("--rate", type=float, default=50.0, help="requests per second")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--format", choices=("text", "json", "json_strings", "default"), default="text", help="gateway log format")
    demo.set_defaults(run=_run_demo)

    serve = commands.add_parser("serve", help="consume Kafka (or HTTP ingest, --follow), store and detect until stopped")
    serve.add_argument("--config", type=Path, help="YAML config file")
    serve.add_argument("--store", help="elasticsearch:URL, opensearch:URL, duckdb:PATH or none (default: config)")
    serve.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT for /healthz, /readyz, /metrics")
    serve.add_argument(
        "--stages", choices=("all", "ingest", "detect"), default="all",
        help="run both stages (default), or one: e.g. detection in a process of its own",
    )  # fmt: skip
    serve.add_argument(
        "--instance-id", default=os.environ.get("GATEWATCH_INSTANCE_ID"),
        help="static group member name of this process (default $GATEWATCH_INSTANCE_ID, else kafka.instance_id)",
    )  # fmt: skip
    serve.add_argument(
        "--follow", nargs="+", default=[], metavar="SIDE=GLOB",
        help="tail these files into the input topics (without Kafka: into the pipeline): "
        "gateway=/var/log/envoy/*.log app=/var/log/billing/*.log*",
    )  # fmt: skip
    serve.add_argument(
        "--follow-positions", type=Path, default=Path("gatewatch-follow-positions.json"), metavar="FILE",
        help="where --follow keeps its read positions (default: %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--local-checkpoint", type=Path, default=Path("gatewatch-local-checkpoint.msgpack"), metavar="FILE",
        help="without Kafka: where detection state, follow positions and batch ids are saved (default: %(default)s)",
    )  # fmt: skip
    serve.set_defaults(run=_run_serve, service=True)

    report = commands.add_parser("report", help="write one self-contained HTML page of a store's alerts and traffic")
    report.add_argument("--store", help="duckdb:PATH, elasticsearch:URL or opensearch:URL (default: config)")
    report.add_argument("--out", type=Path, required=True, metavar="FILE", help="the HTML file to write")
    report.add_argument("--config", type=Path, help="YAML config file (for store.url and store.index_prefix)")
    report.set_defaults(run=_run_report)

    resend = commands.add_parser(
        "resend", help="send the forwarders' dead-lettered alert events again, once their receivers are back"
    )
    resend.add_argument("--config", type=Path, required=True, help="YAML config file (its forward section)")
    resend.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing")
    resend.set_defaults(run=_run_resend)

    schema = commands.add_parser("schema", help="print the config JSON schema (schemas/config.schema.json)")
    schema.set_defaults(run=_run_schema)
    return parser


def _run_replay(args: argparse.Namespace) -> int:
    from gatewatch.config import load_config

    if not args.gateway and not args.app:
        raise GatewatchError("nothing to replay: give --gateway PATH... and/or --app PATH...")
    config = load_config(args.config)  # before the heavy imports: a broken config is refused at once
    install_log_redaction(build_redactor(config))

    from gatewatch.replay import file_sources, replay
    from gatewatch.report import print_summary
    from gatewatch.stores import open_store
    from gatewatch.forward import build_forwarders
    from ingest.sinks.ndjson import STDOUT, AlertEventFile, AlertFile, DeadLetterFile

    if args.alerts_out == STDOUT and args.dead_letters == STDOUT:
        raise GatewatchError("--alerts-out - and --dead-letters - would share stdout: send one of them to a file")
    if STDOUT in (args.alerts_out, args.dead_letters) and sys.stdout is None:
        raise GatewatchError("stdout is closed (>&-): give --alerts-out / --dead-letters a file")
    sources = file_sources(config, args.gateway, args.app)  # a file that does not open: refused before anything opens
    # Alerts on stdout: the files that go next to them are named as for --alerts-out alerts.ndjson.
    beside = Path("alerts.ndjson") if args.alerts_out == STDOUT else args.alerts_out
    dead_letters = args.dead_letters or beside.with_name(beside.stem + ".dead-letters.ndjson")
    alert_events = beside.with_name(beside.stem + ".lifecycle.ndjson")
    forwarders = build_forwarders(config)
    # Where a dead letter's line is: absolute, so a notebook in another folder finds it.
    files = {stream: str(source.path.absolute()) for stream, source in sources.items()}
    store = open_store(args.store or config.store.url, config, files)
    alert_file, dead_letter_file = AlertFile(args.alerts_out), DeadLetterFile(dead_letters, files)
    sinks = [s for s in (store, alert_file, AlertEventFile(alert_events), dead_letter_file, forwarders)
             if s is not None]  # fmt: skip
    try:
        stats = replay(config, args.gateway, args.app, sinks, _progress_log() if args.verbose else None,
                       sources=sources)  # fmt: skip
    finally:
        _close_all(sinks)
    print_summary(console, stats, alert_file.alerts.values(), dead_letters)
    for runner in forwarders.runners if forwarders is not None else ():
        counts = ", ".join(f"{k}={v}" for k, v in sorted(runner.counts.items())) or "nothing to send"
        failed = any(k.startswith("dead_letter_") for k in runner.counts)
        console.print(f"forwarder {runner.name}: {counts}" + (f" -> {runner.dead_letter_path}" if failed else ""),
                      markup=False, highlight=False)  # fmt: skip
    lost = {r.name: r.queued_total - r.settled_total for r in (forwarders.runners if forwarders else ())}
    if any(lost.values()):  # neither sent nor written down (the dead-letter file could not be written)
        console.print(visible("error: " + ", ".join(f"forwarder {name}: {n} alert events neither sent nor written to "
                                                    "its dead-letter file" for name, n in lost.items() if n)
                              + "; replay again once that file is writable"), markup=False, highlight=False)  # fmt: skip
        return 2
    if alert_file.stdout_closed or dead_letter_file.stdout_closed:
        console.print("error: stdout was closed (its reader ended) before everything sent there was written; the "
                      "lifecycle file, and the store and forwarders if any, have every alert", markup=False,
                      highlight=False)  # fmt: skip
        return 1
    return 1 if any(not note.field for note in stats.input_notes) else 0  # an input not read at all


def _close_all(sinks: list[Any]) -> None:
    """Close every sink, each even when another fails (the forwarders must still drain); the first error is
    raised once all are closed."""
    failure = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as error:  # noqa: BLE001 - raised below, once the others are closed
            failure = failure or error
    if failure is not None:
        raise failure


def _not_a_slow_task(record: logging.LogRecord) -> bool:
    """kafka-python warns "Task <object at 0x...> ran for 0.2s ... Other pollers will time out" whenever its
    thread waits for a core (a soak: 13-36 in 10 minutes on 2 busy cores): nothing about gatewatch."""
    return "blocking the event loop" not in str(record.msg)


def _progress_log() -> Callable[[int], None]:
    """What ``replay -v`` logs as it goes: the records read so far, and their rate."""
    import time

    started, done = time.monotonic(), 0

    def progress(records: int) -> None:
        nonlocal done
        done += records
        elapsed = time.monotonic() - started
        logging.getLogger("gatewatch.replay").info(
            "replay_progress records=%d secs=%.1f records_per_sec=%.0f", done, elapsed, done / max(elapsed, 1e-9)
        )

    return progress


def _run_demo(args: argparse.Namespace) -> int:
    from gatewatch.demo.run import run_demo

    return run_demo(console, args.out, args.minutes, args.rate, args.seed, args.format)


def _run_serve(args: argparse.Namespace) -> int:
    from gatewatch.config import load_config, with_instance_id
    from gatewatch.serve import serve
    from gatewatch.topology import tune_gc_for_streaming

    config = load_config(args.config)
    install_log_redaction(build_redactor(config, warn_unkeyed=True))
    from gatewatch.serve_local import kafka_configured

    local = not kafka_configured(config)  # before --instance-id, which names a Kafka group member
    if local and args.stages != "all":
        raise GatewatchError(f"--stages {args.stages} splits the Kafka stages: without a kafka section there is one")
    if args.instance_id:
        config = with_instance_id(config, args.instance_id)
    follow = None
    if args.follow:
        from gatewatch.follow import parse_follow_specs

        follow = (parse_follow_specs(args.follow), args.follow_positions)
    from gatewatch.service_memory import tune_malloc

    tune_malloc()
    tune_gc_for_streaming()
    if local:
        from gatewatch.serve_local import serve_local

        return serve_local(config, args.store or config.store.url, args.listen, args.local_checkpoint, follow)
    return serve(config, args.store or config.store.url, args.listen, stages=args.stages, follow=follow)


def _run_report(args: argparse.Namespace) -> int:
    from gatewatch.config import load_config
    from gatewatch.html_report import load_report_data, write_report

    if not args.verbose:
        # The clients log each failed attempt with a traceback; the error is reported once, in one line.
        for name in ("elastic_transport", "opensearch"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = load_config(args.config)
    data = load_report_data(args.store or config.store.url, config.store.index_prefix)
    path = write_report(data, args.out)
    if data.is_empty():
        console.print(visible(f"report: no events, alerts or dead letters in {data.source}: check --store and "
                              "store.index_prefix"), markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"report: {path}")
    return 0


def _run_resend(args: argparse.Namespace) -> int:
    from gatewatch.config import load_config
    from gatewatch.resend import resend

    config = load_config(args.config)
    install_log_redaction(build_redactor(config))
    results = resend(config, dry_run=args.dry_run)
    for result in results:
        lines = [] if result.outcomes else ["nothing to resend"]
        lines += [f"forwarder {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                  for name, counts in result.outcomes.items()]  # fmt: skip
        lines += [f"unreadable, left in the file: {problem}" for problem in result.problems]
        lines += [f"stopped, {result.stopped}; run again later"] if result.stopped else []
        for line in lines:  # names and errors quote the file: shown inert
            console.print(visible(f"{result.path}: {line}"), markup=False, highlight=False, soft_wrap=True)
    return 0 if args.dry_run or all(result.complete for result in results) else 1


def _run_schema(args: argparse.Namespace) -> int:
    from gatewatch.schema import config_schema_text

    sys.stdout.write(config_schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
