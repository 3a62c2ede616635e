"""The typed messages between the supervisor and its inference worker process.

Protocol (parent -> child / child -> parent), one NamedTuple per message:
    child:  Trying(backend)* then Ready(info) | LoadFailed(reason)
    parent: AttachBuffers(inputs, outputs)
    parent: Run(seq, slot)
    child:  Done(seq, slot, invoke_ms) | InvokeFailed(seq, slot, message)
    parent: Stop()
"""

from __future__ import annotations

from typing import NamedTuple, Union

from edge_agent.inference.tensors import TensorSpec


class WorkerInfo(NamedTuple):
    """What a started worker reports."""

    pid: int
    backend: str
    rank: int  # position of the backend in priority order: lower is better
    has_fallback: bool  # a worse backend remains if this one fails
    model_path: str
    runtime: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    attempts: tuple[tuple[str, str], ...]
    load_ms: float


class Trying(NamedTuple):
    """Child -> parent: about to load the model on this backend (if the process dies
    now, that backend killed it)."""

    backend: str


class Ready(NamedTuple):
    """Child -> parent: the model is loaded."""

    info: WorkerInfo


class LoadFailed(NamedTuple):
    """Child -> parent: no backend could load the model."""

    reason: str


class AttachBuffers(NamedTuple):
    """Parent -> child: the shared-memory block names of the input and output slots."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Run(NamedTuple):
    """Parent -> child: invoke once on an input slot."""

    seq: int
    slot: int


class Done(NamedTuple):
    """Child -> parent: the outputs of ``seq`` are in output slot ``slot``."""

    seq: int
    slot: int
    invoke_ms: float


class InvokeFailed(NamedTuple):
    """Child -> parent: the invoke of ``seq`` raised."""

    seq: int
    slot: int
    message: str


class Stop(NamedTuple):
    """Parent -> child: exit."""


Completed = Union[Done, InvokeFailed]  # typing.Union: "|" on classes needs 3.10
