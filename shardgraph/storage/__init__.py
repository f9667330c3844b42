"""Partition storage: checkpoints on disk and the in-memory partition buffer."""
