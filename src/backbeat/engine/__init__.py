"""The engine: what runs tasks, between the stores below and the `Runner` above.

* `protocol` — `Engine`, what the runner asks of either feeder;
* `execution` — one attempt of one task (hooks, timeout, cancellation, retry decision),
  written once for both feeders;
* `local` — the in-process feeder: live Python objects, no store; with `jobs` (a task's
  and a collection's place in it, eager mode) and `slot_queue` (jobs waiting for a slot);
* `stored` — the stored feeder's writing half: task trees to stored tasks, write ahead,
  activate, status reads; with `round_trip` (arguments through JSON and back);
* `worker` — its executing half: claim, run, record; with `claims` (a claimed task to an
  attempt, an outcome to a settlement), `reports` (progress and outcomes, batched) and
  `leases` (the thread that keeps a worker's leases while its loop is busy), `health`,
  `takeover` (a dead worker's claims), `connecting` (a store unreachable at start-up) and
  `scheduler` (periodic ticks);
* `limits` — the runner's numbers and their checks;
* `results` — waiting for a task's result;
* `blocking` — store calls for sync code.

Nothing here imports the runner or the web layer (import-linter checks it).
"""
