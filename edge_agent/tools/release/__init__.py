"""The operator's release tooling: keygen, pack, verify, push and its lab server."""
