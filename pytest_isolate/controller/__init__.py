"""The controller: what runs in pytest's process (or an xdist worker) for isolated tests.

``lifecycle`` runs one isolated test as pytest's runner would (the shared fixtures here,
the test in a sandbox, reruns); ``turn`` is one test's turn in a sandbox, ``fork_only``
the same without a sandbox where the host allows none. ``session`` holds the state of a
session: the builder's client (``builder_client``), the fork server's client
(``forkserver_client``), the test process forked ahead (``spares``, when ``prefork``
allows it). ``launch`` starts a test process, ``waiting`` reads it until it is done,
``crashes`` writes the reports of one that died; ``forking`` forks without Python's
multi-threaded-fork warning; ``outcome`` is what a run gives back.
"""
