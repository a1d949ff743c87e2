# The package's dummy_test_action waits 3 to 30 s; in tests, in both engines alike, it waits
# 0.2 s (only its wait is changed: the action's module attribute it calls).
import time

from nuvla.job_engine.job.actions import dummy_test_action

dummy_test_action.random_wait = lambda low, high: time.sleep(0.2)
