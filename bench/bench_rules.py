"""CPU per event of the detector set alone, on bench_replay's data.

    .venv/bin/python bench/bench_rules.py json
    .venv/bin/python bench/bench_rules.py json --tree ../other-checkout # the same calls on another tree

One pipeline run (as ``bench_stages.py``'s) records every call the pipeline
makes to its :class:`~detectors.runner.DetectorSet` (arrivals, ordered events,
transactions, advances), in order; then a fresh detector set, with the alert
book and lifecycle a pipeline gives it, replays those calls ``--repeat`` times
and the best CPU time (``time.process_time``) is printed per event, with the
share of ``advance`` (where windows close and behaviour_outlier's model fits).
``--each`` then does the same with no rule and with each rule alone, to see
what each costs. The digest of the alerts raised tells two trees' rules apart:
it must not change when the rules get faster.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from data_sets import data_folder

# The detector set's entry points a pipeline calls: the record hooks (a late event) and their batch forms.
HOOKS = ("observe_arrival", "observe_event", "observe_transaction",
         "observe_arrivals", "observe_events", "observe_transactions", "advance")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=("json", "text"), help="which bench_replay data set")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the gatewatch tree whose detectors run (default: this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--each", action="store_true", help="also time no rule, then each rule alone")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))

    from detectors import registry
    from detectors.alerts import AlertBook
    from detectors.base import Detector
    from detectors.lifecycle import AlertLifecycle
    from detectors.runner import DetectorSet
    from gatewatch.config import load_config
    from gatewatch.replay import CHUNK_RECORDS
    from gatewatch.topology import Pipeline, detector_configs, lifecycle_settings, tune_gc_for_streaming
    from ingest.records import Dataset, Origin, RawRecord

    folder = data_folder(args.format)
    config = load_config(folder / "gatewatch.yaml")
    tune_gc_for_streaming()

    # Record: the pipeline as replay() drives it, its detector set's four entry points wrapped.
    pipeline = Pipeline(config)
    calls: list[tuple[str, object]] = []
    detectors = pipeline.detectors
    for hook in (h for h in HOOKS if hasattr(detectors, h)):  # an older tree has no batch methods
        def recorded(argument: object, _hook: str = hook, _run: object = getattr(detectors, hook)) -> object:
            calls.append((_hook, list(argument) if isinstance(argument, list) else argument))  # the pipeline reuses its lists
            return _run(argument)  # type: ignore[operator]
        setattr(detectors, hook, recorded)
    readers = {}
    for dataset, name in ((Dataset.GATEWAY, "gateway.log"), (Dataset.APP, "app.log")):
        path = str(folder / name)
        lines = (folder / name).read_bytes().splitlines(keepends=True)
        readers[path] = iter([RawRecord(Origin(dataset, path, i), line) for i, line in enumerate(lines, 1)])
        pipeline.open_stream(path)
    while readers:
        stream = min(readers, key=pipeline.order.stream_clock)
        chunk = list(islice(readers[stream], CHUNK_RECORDS))
        if not chunk:
            del readers[stream]
            pipeline.close_stream(stream)
        pipeline.feed(chunk)
        pipeline.process()
        pipeline.drain()
    pipeline.finish()
    events = sum(1 if hook == "observe_event" else len(argument)  # type: ignore[arg-type]
                 for hook, argument in calls if hook in ("observe_event", "observe_events"))
    print(f"{folder.name}: {events:,} events, {len(calls):,} detector calls ({args.tree})")

    def run(select: Callable[[type[Detector]], bool] | None) -> tuple[float, float, str]:
        book = AlertBook(config.alerts.suppression_window_secs, config.alerts.max_request_ids)
        fresh = DetectorSet(detector_configs(config), pipeline.context, book,
                            AlertLifecycle(**lifecycle_settings(config, book)), select=select)
        hooks = {hook: getattr(fresh, hook) for hook in HOOKS if hasattr(fresh, hook)}
        alerts = []
        advancing = 0.0  # advances are few (one a second of event time): timed one by one
        gc.collect()
        start = time.process_time()
        for hook, argument in calls:
            if hook == "advance":
                started = time.process_time()
                alerts += hooks[hook](argument)
                advancing += time.process_time() - started
            else:
                alerts += hooks[hook](argument)
        total = time.process_time() - start
        digest = hashlib.blake2b(digest_size=8)
        for alert in alerts:
            digest.update(repr(alert).encode())  # every field of every alert raised, in order
        return total, advancing, digest.hexdigest()

    selections: list[tuple[str, Callable[[type[Detector]], bool] | None]] = [("detector set", None)]
    if args.each:
        selections.append(("no rule", lambda cls: False))
        selections += [(rule_id, lambda cls, r=rule_id: cls.rule_id == r) for rule_id in registry()]
    for name, select in selections:
        best: tuple[float, float, str] | None = None
        for _ in range(args.repeat):
            figures = run(select)
            if best is None or figures[0] < best[0]:
                best = figures
        assert best is not None
        total, advancing, digest = best
        print(f"{name + ':':<24}{total / events * 1e6:6.3f} us an event, of which advance "
              f"{advancing / events * 1e6:6.3f}  (alerts digest {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
