# The package's dummy_test_action waits 3 to 30 s; in tests, in both engines alike, it waits
# 0.2 s, or a random time in NUVLA_DUMMY_WAIT="LOW,HIGH" seconds (the benchmark's mix). Only
# its wait is changed: the module attribute the action calls.
import os
import random
import time

from nuvla.job_engine.job.actions import dummy_test_action

_low, _high = (float(x) for x in os.environ.get("NUVLA_DUMMY_WAIT", "0.2,0.2").split(","))
dummy_test_action.random_wait = lambda low, high: time.sleep(random.uniform(_low, _high))
