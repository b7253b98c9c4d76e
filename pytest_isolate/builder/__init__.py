"""The sandbox builder: a small helper process, one per pytest process (or xdist worker).

It builds the *next* sandboxes (cgroups, pid 1 of fresh namespaces, the overlay
snapshot) while the current test runs, so that a test process only has to be forked
and join one. ``main`` is its entry point, ``builder`` its state and loop; a sandbox is
built by the builder itself as root (``rooted``), or by its pid 1, rootless or without
a snapshot (``in_init``). The parts a sandbox is made of: ``namespaces``, ``snapshot``
(the overlay of the host, and the fresh /proc a test process mounts),
``snapshot_rootless`` (with ``unmapped``), ``network``. ``plan`` is what pytest's
process tells it to build. Nothing here imports pytest.
"""
