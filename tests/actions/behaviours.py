"""Actions with every outcome the executor must handle (loaded by the executor tests)."""

import json
import os
import time

from nuvla_job.registry import action


@action("test_ok")
class Ok:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        self.job.set_progress(50)
        return 0


@action("test_fail_code")
class FailCode:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        return 3


@action("test_raises", pull_mode_support=True)
class Raises:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        raise RuntimeError("boom from the action")


@action("test_returns_none")
class ReturnsNone:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        return None


@action("test_sleep")
class Sleep:
    """Sleeps payload["seconds"]; appends "start ID" / "end ID" to payload["log"] if given."""

    def __init__(self, job):
        self.job = job

    def _mark(self, what):
        path = self.job.payload.get("log")
        if path:
            with open(path, "a") as handle:
                handle.write(f"{what} {self.job.id} {os.getpid()}\n")

    def do_work(self):
        self._mark("start")
        time.sleep(float(self.job.payload.get("seconds", 1)))
        self._mark("end")
        return 0


@action("test_ok")
class DuplicateOk:
    """A second action of one name: the first registration must win."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        return 99


@action("test_payload_echo")
class PayloadEcho:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        self.job.set_status_message(json.dumps(self.job.payload, sort_keys=True))
        return 0


@action("test_leaks_secret")
class LeaksSecret:
    """Raises an exception whose message holds the executor's API secret."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        secret = self.job.api.session.login_params.get("secret")
        raise ValueError(f"could not use secret {secret}")
