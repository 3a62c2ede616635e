"""Inference: runtimes, backends, quantization, preprocessing, adapters."""
