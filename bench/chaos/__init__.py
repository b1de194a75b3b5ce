"""The fault campaign: rotator against a faulty sandbox, judged afterwards from the sandbox's event log.

- :mod:`bench.chaos.invariants` reads an event log (and the policies' configuration)
  and reports every broken invariant with the events that show it;
- :mod:`bench.chaos.campaign` drives rotator (``run-once`` day after day on a
  fast-forwarded clock, then the ``rotator run`` daemon in real time) while the
  sandbox injects faults and the driver kills rotator with SIGKILL;
- ``python -m bench.chaos`` runs a campaign and prints its figures (``make chaos``).
"""
