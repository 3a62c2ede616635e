"""The fleet simulator: N devices' real update path on one machine (not used by the daemon)."""
