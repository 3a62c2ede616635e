"""Objects, not frames: tracks across frames, zones, and the events and counts built on them.

Pure and numpy-only, like the adapters: detections and timestamps in, NamedTuples out;
no I/O, no logging, no clock of their own (every call takes the frame's time).
"""
