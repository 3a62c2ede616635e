"""Inference backends, one module each, chosen through the registry in base.py."""
