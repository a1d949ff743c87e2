"""nuvla-job: a distributed job engine for CIMI `job` resources."""

__version__ = "0.1.0"
