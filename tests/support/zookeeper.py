"""Tests use the package's local ZooKeeper launcher (see nuvla_job/localstack/zookeeper.py)."""

from nuvla_job.localstack.zookeeper import (  # noqa: F401
    ZooKeeperNotAvailable,
    ZooKeeperServer,
    ZooKeeperStartError,
    build_classpath,
    find_java,
    four_letter_word,
)
