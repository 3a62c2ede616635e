"""Classification output -> the best classes above a score threshold.

The scores are used as the model gives them (no softmax): Coral/TF-slim classifiers
already end in a softmax, and a threshold on logits is still a consistent ranking.
"""

from __future__ import annotations

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import Class, threshold_mask
from edge_agent.inference.tensors import QuantParams, dequantize


def class_scores(output: np.ndarray) -> np.ndarray:
    """The 1-D score vector of a classification output (``[C]``, ``[1, C]``, ``[1, 1, 1, C]``).

    Raises:
        ModelError: the output has more than one non-unit axis besides the last one.
    """
    if output.ndim == 0 or any(dim != 1 for dim in output.shape[:-1]):
        raise ModelError(f"classification output shape {list(output.shape)} is not [C] or [1, C]")
    return output.reshape(-1)


def top_k(scores: np.ndarray, quant: QuantParams, k: int, threshold: float) -> list[Class]:
    """The ``k`` highest-scoring classes whose score is ``>= threshold``.

    For a quantized output the threshold is compared on the raw integers and only the
    survivors are dequantized, so a 1001-class uint8 output costs one integer
    comparison.

    Args:
        scores: the raw output tensor, ``[C]`` or ``[1, C]`` (integers when quantized).
        quant: the output's quantization parameters (``NOT_QUANTIZED`` for floats).
        k: how many classes to return at most; ``k <= 0`` returns every class above the
            threshold.
        threshold: the minimum real score (inclusive).

    Returns:
        Classes sorted by score (highest first), ties by ascending class id.

    Raises:
        ModelError: ``scores`` is not a single score vector.
        ValueError: ``threshold`` is NaN.
    """
    raw = class_scores(np.asarray(scores))
    ids = np.flatnonzero(threshold_mask(raw, quant, threshold))
    if ids.size == 0:
        return []
    values = dequantize(raw[ids], quant)
    # lexsort: last key is primary -> score descending, then id ascending.
    order = np.lexsort((ids, -values))
    if k > 0:
        order = order[:k]
    return [Class(int(ids[i]), float(values[i])) for i in order]
