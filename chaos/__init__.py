"""Fault injection ("chaos") suite of commandbus: ``python -m chaos`` (``make chaos``).

Why: commandbus promises at-least-once delivery with exactly-once effects on its own
tables, and process managers that continue after any restart. Unit and contract tests
check each transition; this suite checks the promise end to end, under the faults a
production deployment sees: worker and router processes killed with SIGKILL in the middle
of their work, and PostgreSQL restarted under them, both cleanly (``pg_ctl restart -m
fast``) and as a crash (``-m immediate``).

What: on a PostgreSQL cluster of its own (never the user's server), it sends commands
whose transactional handler writes an effect row, starts StatementReport processes
(three steps each, through ``ProcessReplyRouter``) and event-driven processes (started
by events through a subscription, three tasks each, through ``ProcessEventRouter``), runs
several worker and router OS
processes, injects the faults at seeded-random moments, measures throughput over time on
the database clock and how long each fault took to recover from, and finally counts what
was lost, duplicated, stuck, still in flight, in the troubleshooting queue and completed.
Exit status 1 on any lost, duplicated or stuck item.

Modules: ``run`` (the driver), ``pgcluster`` (the throw-away cluster), ``agent`` (one
worker or router process), ``agents`` (starting, killing and watching them), ``workload``
and ``events_workload`` (handlers and processes), ``load`` (the paced sender),
``faults``, ``metrics``, ``report`` and ``events_report`` (the final accounting) and
``summary`` (what is printed).
"""
