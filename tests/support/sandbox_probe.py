"""Stand-in daemon run by tests/component/test_systemd_unit.py inside the unit's sandbox.

It does, under the real sandbox, what the daemon needs to do (sd_notify, a forkserver
worker fed through shared memory running LiteRT, tflite-runtime, ctypes callbacks,
OpenCV's FFmpeg, TCP out, a uevent netlink socket) and probes what must stay denied.
The findings go to ``$STATE_DIRECTORY/probe.json`` as errno values (0 = allowed).

Usage: python sandbox_probe.py MODEL INPUT.npy TCP_PORT
"""

from __future__ import annotations

import ctypes
import json
import mmap
import multiprocessing as mp
import os
import socket
import sys
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable

NETLINK_KOBJECT_UEVENT = 15


def notify(message: str) -> None:
    """Send one sd_notify datagram to $NOTIFY_SOCKET."""
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def errno_of(action: Callable[[], Any]) -> int:
    """Run ``action``; return the errno it failed with, 0 if it succeeded."""
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def invoke(interpreter_class: Any, model: str, x: Any) -> list:
    """Run the model once on ``x``; return its raw output as a list."""
    interpreter = interpreter_class(model_path=model, num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).tolist()


def worker(shm_name: str, shape: tuple[int, ...], model: str) -> list:
    """Worker-process side: read the input from shared memory, run LiteRT."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    shm = SharedMemory(name=shm_name)
    x = np.ndarray(shape, np.uint8, buffer=shm.buf).copy()
    shm.close()
    return invoke(Interpreter, model, x)


def video_frames(directory: str) -> int:
    """Encode then decode a 10-frame clip through OpenCV's FFmpeg."""
    import cv2
    import numpy as np

    clip = os.path.join(directory, "probe.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    capture, frames = cv2.VideoCapture(clip), 0
    while capture.read()[0]:
        frames += 1
    return frames


def main(model: str, input_path: str, port: int) -> None:
    """Probe the sandbox and write the report."""
    notify("READY=1")
    import numpy as np

    report: dict[str, Any] = {"uid": os.getuid(), "watchdog_usec": os.environ.get("WATCHDOG_USEC")}
    report["usr_write_errno"] = errno_of(lambda: open("/usr/edge-agent-probe", "w").close())
    report["root_home_errno"] = errno_of(lambda: os.listdir("/root"))
    report["cpuinfo_readable"] = os.access("/proc/cpuinfo", os.R_OK)

    x = np.load(input_path)
    shm = SharedMemory(create=True, size=x.nbytes)
    np.ndarray(x.shape, np.uint8, buffer=shm.buf)[:] = x
    with mp.get_context("forkserver").Pool(1) as pool:
        report["litert_worker"] = pool.apply(worker, (shm.name, x.shape, model))
    shm.close()
    shm.unlink()
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        report["tflite"] = None
    else:
        report["tflite"] = invoke(Interpreter, model, x)

    seen: list[bytes] = []
    ctypes.CFUNCTYPE(None, ctypes.c_char_p)(seen.append)(b"ok")  # as load_delegate does
    report["ctypes_callback"] = seen == [b"ok"]
    report["video_frames"] = video_frames(os.environ["RUNTIME_DIRECTORY"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"edge-agent-probe")
    report["netlink_errno"] = errno_of(
        lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT).close()
    )
    report["packet_errno"] = errno_of(
        lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    )
    writable_exec = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    report["wx_mmap_errno"] = errno_of(lambda: mmap.mmap(-1, 4096, prot=writable_exec))
    report["setgroups_errno"] = errno_of(lambda: os.setgroups([]))
    # edge_agent/scheduling.py: the frame path's threads take SCHED_BATCH, the worker
    # SCHED_OTHER; a filtered sched_setscheduler would silently undo that.
    batch = os.sched_param(0)
    report["sched_batch_errno"] = errno_of(lambda: os.sched_setscheduler(0, os.SCHED_BATCH, batch))
    report["sched_other_errno"] = errno_of(lambda: os.sched_setscheduler(0, os.SCHED_OTHER, batch))
    notify("WATCHDOG=1")
    with open(os.path.join(os.environ["STATE_DIRECTORY"], "probe.json"), "w") as out:
        json.dump(report, out)
    notify("STOPPING=1")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
