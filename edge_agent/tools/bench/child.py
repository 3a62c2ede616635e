"""Running one of the bench's loops (A, the bare loop; B, the naive loop) in a process of
its own, forked by the forkserver, so it holds neither the daemon's GIL nor its memory."""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection
from typing import Any, Callable

from edge_agent.errors import WorkerError
from edge_agent.inference.worker import forkserver_context


def _child(
    conn: Connection, loop: Callable[..., dict], args: tuple, catch: type[BaseException],
    what: str, log_level: int,
) -> None:  # fmt: skip
    """Process entry: run the loop and send back ("ok", report) or ("failed", reason)."""
    # Ctrl-C reaches the whole process group; the bench decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s {what}: %(message)s")
    try:
        conn.send(("ok", loop(*args)))
    except catch as exc:  # anything else kills the child: the parent reports its exit
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_in_child(
    loop: Callable[..., dict], args: tuple, *, name: str, what: str, model: str,
    timeout: float, catch: type[BaseException],
) -> dict[str, Any]:  # fmt: skip
    """``loop(*args)`` in a fresh forkserver child; its report.

    Args:
        loop: a module-level function (it is pickled by reference).
        name: the child's process name; what: the loop's name in messages.
        model: the model file, named in errors.
        timeout: seconds for the whole run, model load included.
        catch: the exceptions the child reports as a failure rather than dying of them.

    Raises:
        WorkerError: the loop failed, the process died, or it timed out.
    """
    ctx = forkserver_context()
    parent, child = ctx.Pipe(duplex=False)
    level = logging.getLogger().getEffectiveLevel()
    process = ctx.Process(target=_child, name=name, daemon=True,
                          args=(child, loop, args, catch, what, level))  # fmt: skip
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise WorkerError(f"model {model}: {what} gave no answer in {timeout:.0f}s")
        status, payload = parent.recv()
    except (EOFError, OSError) as exc:
        raise WorkerError(f"model {model}: {what} died (exit code {process.exitcode})") from exc
    except KeyboardInterrupt:
        process.kill()  # its report is no longer wanted: do not wait for the loop to end
        raise
    finally:
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)
        parent.close()
    if status != "ok":
        raise WorkerError(f"model {model}: {what}: {payload}")
    return payload
