"""The shared-memory slots frames travel through between the pipeline and the worker.

The parent owns them: the pipeline preprocesses straight into an input slot, the worker
copies it into the tensor and copies the outputs back into the output slot, whose views
the supervisor hands out in its Completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from edge_agent.inference.protocol import AttachBuffers, WorkerInfo
from edge_agent.inference.tensors import TensorSpec

SLOTS = 2  # double buffering: the pipeline fills one slot while the worker runs the other


def nbytes(spec: TensorSpec) -> int:
    """Bytes of one tensor."""
    return int(np.prod(spec.shape)) * spec.dtype.itemsize


def views(shm: SharedMemory, specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Arrays over consecutive tensors laid out in a shared-memory block."""
    arrays, offset = [], 0
    for spec in specs:
        arrays.append(np.ndarray(spec.shape, spec.dtype, buffer=shm.buf, offset=offset))
        offset += nbytes(spec)
    return arrays


class Buffers:
    """Shared-memory input and output slots for one tensor layout (owned by the parent)."""

    def __init__(self, input_spec: TensorSpec, output_specs: Sequence[TensorSpec]):
        self.input_spec = input_spec
        self.output_specs = tuple(output_specs)
        out_bytes = sum(nbytes(s) for s in output_specs)
        self._in = [
            SharedMemory(create=True, size=max(1, nbytes(input_spec))) for _ in range(SLOTS)
        ]
        self._out = [SharedMemory(create=True, size=max(1, out_bytes)) for _ in range(SLOTS)]
        self.inputs = [views(b, [input_spec])[0] for b in self._in]
        self.outputs = [views(b, output_specs) for b in self._out]
        self._retired: list[Buffers] = []  # replaced slots that outputs handed out still view

    @classmethod
    def reuse(cls, buffers: Buffers | None, info: WorkerInfo) -> tuple[Buffers, bool]:
        """``buffers`` if a worker's tensors fit them, else new slots.

        Replaced slots are not freed at once: the outputs of frames completed just before
        (a Completion's views) may still be read. They are freed by the new slots'
        :meth:`release` (once those outputs were decoded) or :meth:`close`: reading a
        freed block's view is a segfault.

        Returns:
            (the slots, True when they are the ones given: their contents still stand).
        """
        if buffers is not None and buffers.fits(info):
            return buffers, True
        new = cls(info.input, info.outputs)
        if buffers is not None:
            new._retired.append(buffers)
        return new, False

    def release(self) -> None:
        """Free the slots these replaced (no view of theirs is read any more)."""
        while self._retired:
            self._retired.pop().close()

    def fits(self, info: WorkerInfo) -> bool:
        """True when a worker's tensors have this layout (the slots can be reused)."""
        return info.input == self.input_spec and tuple(info.outputs) == self.output_specs

    def names(self) -> AttachBuffers:
        """Block names to send to a worker."""
        return AttachBuffers(tuple(b.name for b in self._in), tuple(b.name for b in self._out))

    def close(self) -> None:
        """Free the blocks (and those of the slots these replaced)."""
        self.release()
        self.inputs, self.outputs = [], []
        for block in (*self._in, *self._out):
            block.close()
            try:
                block.unlink()
            except FileNotFoundError:
                pass
