"""Many real processes for the price of one interpreter start-up.

A parent Python process imports anisearch and its dependencies once, then forks one child per job: every
child is a separate OS process with its own memory, its own event loop, its own ledger connection and its
own pid, which is what the cross-process tests are about; none of them pays the import again (about 0.5 s
of CPU each, which made these tests the slowest of the suite). The parent starts no thread and no event
loop before forking.

Jobs run ``together`` (forked first, then released at once through a pipe, for the most contention) or one
after the other (each child exits before the next is forked).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PARENT = r"""
import json, os, sys, traceback

spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
# The expensive part, once: what every worker would otherwise import in its own interpreter. httpcore
# (with the trio and h11 it imports), anyio's asyncio backend and psutil are imported by the first client
# a process opens (about 0.3 s of CPU in each child).
import anyio, anyio._backends._asyncio, httpcore, httpx, psutil, pydantic, PIL.Image
import anisearch, anisearch.cli, anisearch.provider, anisearch._client, anisearch._sync, anisearch._ledger
for name in spec["preload"]:
    __import__(name)

code = compile(spec["script"], "<worker>", "exec")
release_read, release_write = os.pipe()


def child(index, job):
    status = 1
    out = open(os.path.join(spec["outdir"], f"{index}.out"), "w", encoding="utf-8")
    err = open(os.path.join(spec["outdir"], f"{index}.err"), "w", encoding="utf-8")
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        os.environ.update(job["env"])
        if spec["together"]:
            os.read(release_read, 1)
        sys.argv = ["worker", *job["argv"]]
        try:
            exec(code, {"__name__": "__main__"})
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


pids = []
for index, job in enumerate(spec["jobs"]):
    pid = os.fork()
    if pid == 0:
        child(index, job)
    if spec["together"]:
        pids.append(pid)
    else:
        pids.append(os.waitpid(pid, 0)[1])
if spec["together"]:
    os.write(release_write, b"x" * len(pids))
    pids = [os.waitpid(pid, 0)[1] for pid in pids]
print(json.dumps([os.waitstatus_to_exitcode(status) for status in pids]))
"""


@dataclass(frozen=True, slots=True)
class Job:
    """One child: its arguments (``sys.argv[1:]``) and what it adds to the environment."""

    argv: Sequence[str] = ()
    env: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """What one child did."""

    returncode: int
    stdout: str
    stderr: str


def run_forked(
    script: str,
    jobs: Sequence[Job],
    workdir: Path,
    *,
    together: bool,
    env: Mapping[str, str] | None = None,
    preload: Sequence[str] = (),
    timeout: float = 180,
) -> list[Done]:
    """Run ``script`` (as ``__main__``) once per job, each in its own forked process; return each outcome.

    ``env`` is the parent's environment on top of the test's; ``preload`` names more modules to import in
    the parent before forking.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "script": script,
        "jobs": [{"argv": list(job.argv), "env": dict(job.env or {})} for job in jobs],
        "together": together,
        "outdir": str(workdir),
        "preload": list(preload),
    }
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(spec_path)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one process group: a timeout ends the children too
    ) as parent:
        try:
            stdout, stderr = parent.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)  # nothing is left once all went well
    assert parent.returncode == 0, stderr
    codes = json.loads(stdout)
    return [
        Done(
            returncode=code,
            stdout=(workdir / f"{index}.out").read_text(encoding="utf-8"),
            stderr=(workdir / f"{index}.err").read_text(encoding="utf-8"),
        )
        for index, code in enumerate(codes)
    ]
