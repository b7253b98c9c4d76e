"""The sandbox's pid 1: it keeps the pid namespace alive while the test runs.

As root with a snapshot, pid 1 is a program spawned by the builder (``program``: 98
bytes of x86-64 code of our own, or ``cat``) that reads a pipe until the builder is
gone. Rootless or without a snapshot, it is a fork of the builder that built the
sandbox and then reaps and forwards signals (``python_init``). When pid 1 exits, the
kernel kills everything left in the namespace.
"""
