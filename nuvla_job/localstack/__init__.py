"""A local stack on one machine: ZooKeeper from Debian's jars and the job API, on free
loopback ports. Used by the quick start (`make run`), the tests and the benchmarks."""
