"""The HTML report of a run: metrics, curves, throughput, embedding statistics."""
