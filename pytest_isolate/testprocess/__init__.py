"""The test process: pid 2 of its sandbox, one per isolated test.

Forked from pytest's process (or, ahead of its turn, from the fork server), it joins
the sandbox the builder made (``enter``), runs the item's setup, call and teardown as
pytest's runner would (``main``), sends each report and warning to pytest's process
over the report pipe (``wire``), and leaves with ``os._exit``. What it is given to do
so is a ``context.ChildContext``.
"""
