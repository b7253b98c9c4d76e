"""The fork server's request and answer, shared by the server and its client.

A request: the item's index, whether the child is born in the sandbox's pid namespace,
how many join and namespace descriptors follow the first three; then the other fields
of the context, as JSON (read by the child only). The answer: a pid, or -errno.
"""

from __future__ import annotations

import struct
from dataclasses import fields

from ..testprocess.context import ChildContext

FD_FIELDS = ("report_fd", "init_pidfd", "turn_fd")
REQUEST = struct.Struct("<iBBB")
ANSWER = struct.Struct("<q")
# The context's other fields, sent as they are (descriptors go apart, as SCM_RIGHTS).
PLAIN_FIELDS = tuple(
    f.name
    for f in fields(ChildContext)
    if f.name not in (*FD_FIELDS, "close_fds", "join_fds", "ns_fds")
)
