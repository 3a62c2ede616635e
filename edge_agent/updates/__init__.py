"""Signed over-the-air model updates: manifests, downloads, on-disk store, operator tools."""
