"""The built-in actions, shipped with the package and loaded by every executor first.

One module per action family: `bulk_jobs` (the generic bulk parent), `monitor_bulk_job` (the
bulk monitor: its action and distribution), `cancel_children_jobs`, `cleanup_jobs`,
`http_request`, `restore_queue`, and `demo` (`sleep` and upstream's `dummy_test_action`).
`nuvla_job.registry.load_actions` imports each module of this package (no entry point is
needed, so a source tree on PYTHONPATH has them too); users' own actions come from
`--actions-path` folders and the `nuvla_job.actions` entry-point group.
"""
