"""Partitioned detection (issue 14): pure tasks, driven by serve over Kafka or in memory by :mod:`.local`.

    input topics --ingest: parse, route by request id--> <group_id>-requests (P partitions)
    requests/p --JOIN task: order, correlate, one-record rules--> <group_id>-keyed (P), <group_id>-findings (1)
    keyed/p    --KEYED task: rules keyed by an entity--------> <group_id>-findings
    findings/0 --ALERT task: alert book, lifecycle, behaviour_outlier's model--> alerts, lifecycle events

Each task reads one partition, is a pure function of the messages it reads
(never this process's clock), and checkpoints as data (:mod:`gatewatch.wire`).
See :mod:`.base` for the contract the serve stage drives.
"""
