"""The sandbox builder's entry point: ``python -I -S -c "...main()" CONFIG SYS_PATH``.

Started by ``controller.builder_client.SandboxPool`` (no site, no pytest: a small
process, so its forks are cheap). It dies with pytest: PR_SET_PDEATHSIG delivers
SIGTERM, and the handler kills every sandbox and removes their cgroups. If it is
killed outright, the next run's sweep removes what is left (every directory is named
after its owner's pid and start time).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from .. import ffi
from ..cgroups.owners import owner_token, token_is_stale
from ..host.userns import enter_own_userns
from . import unmapped
from .builder import Builder
from .plan import BuildPlan

SCRATCH_PREFIX = "pytest-isolate-"


def sweep_scratch(base: str) -> None:
    """Remove the (empty) mount-point directories of runs that are gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if name.startswith(SCRATCH_PREFIX) and token_is_stale(name[len(SCRATCH_PREFIX) :] + ".0"):
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    config = json.loads(sys.argv[1])
    ffi.prctl(ffi.PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != config["parent"]:
        return  # pytest died before we could ask to be told
    plan = BuildPlan.from_json(config.get("plan", {}))
    stand_ins = unmapped.Found()
    if plan.userns == "first" and plan.overlay:
        # Rootless: what the snapshot could not copy up, found once, as the user.
        places = (os.environ.get("HOME", ""), os.getcwd(), config["scratch_base"])
        stand_ins = unmapped.find(places)
    if plan.userns == "first":
        # Rootless: a user namespace of our own first, where we hold the capabilities to
        # build every sandbox (its pid, mount, net, uts and ipc namespaces are owned by it).
        enter_own_userns()
    if plan.init_builds:
        ffi.prctl(ffi.PR_SET_CHILD_SUBREAPER, 1)  # the inits of ``in_init``
    os.set_inheritable(config["fd"], False)  # no sandbox's pid 1 may hold it
    sock = socket.socket(fileno=config["fd"])
    base = config["scratch_base"]
    sweep_scratch(base)
    scratch = os.path.join(base, f"{SCRATCH_PREFIX}{owner_token()}")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    builder = Builder(sock, scratch, plan, config.get("shares"), stand_ins)
    if builder.backend is not None:
        builder.backend.sweep()
    try:
        builder.serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # pytest closed its end while we were building: it is done with us
    finally:
        builder.close()


if __name__ == "__main__":  # pragma: no cover
    main()
