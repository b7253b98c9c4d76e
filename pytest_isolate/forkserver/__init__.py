"""The fork server: test processes forked ahead from a copy of pytest that does nothing else.

Every fork write-protects the forking process's memory, and while any child still
shares a page, each page the forking process writes is copied. pytest writes all
the time (reports, logging, our own bookkeeping), and with a test process always
alive beside it (the running one, the next one waiting), it paid a copy for every
page it touched, for every test: about as much CPU as the fork itself.

So the processes forked ahead (``controller.session.Spare``) come from a fork server: a
child of pytest, forked once at the first of them, that only ever receives
"fork for item N" (with the sandbox's descriptors) and forks. Its children are
made pytest's own children (``CLONE_PARENT``): pytest waits for them, reads their
exit status and signals them exactly as it does the processes it forks itself.
pytest, which forks no more, copies each page it writes at most once.

The server is a snapshot of pytest taken when it started: it is replaced as soon
as pytest's process runs fixture code (``_compat.fixture_runs``), the same rule
that decides whether a process forked ahead is still of use.

Modules: ``server`` is the server's loop (it runs in the fork server, and its children
become test processes); ``clone`` forks a process whose child is its parent's;
``protocol`` is the request and answer format, shared with the client in pytest's
process (``controller.forkserver_client``).
"""
