"""The engine: what runs tasks, between the stores below and the `Runner` above.

* `execution` — one attempt of one task (hooks, timeout, cancellation, retry decision),
  written once for both feeders;
* `local` — the in-process feeder: live Python objects, no store;
* `stored` — the stored feeder: tasks written to a store, claimed under leases;
* `leases` — the thread that keeps a worker's leases while its loop is busy.

Nothing here imports the runner or the web layer (import-linter checks it).
"""
