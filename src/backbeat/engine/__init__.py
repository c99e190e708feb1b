"""The engine: what runs tasks, between the stores below and the `Runner` above.

* `execution` — one attempt of one task (hooks, timeout, cancellation, retry decision),
  written once for both feeders;
* `local` — the in-process feeder: live Python objects, no store; with `jobs` (a task's
  and a collection's place in it, eager mode) and `slot_queue` (jobs waiting for a slot);
* `stored` — the stored feeder's writing half: task trees to stored tasks, write ahead,
  activate, status reads;
* `worker` — its executing half: claim, run, record; with `claims` (a claimed task to an
  attempt, an outcome to a settlement), `reports` (progress and outcomes, batched) and
  `leases` (the thread that keeps a worker's leases while its loop is busy);
* `limits` — the runner's numbers and their checks;
* `blocking` — store calls for sync code.

Nothing here imports the runner or the web layer (import-linter checks it).
"""
