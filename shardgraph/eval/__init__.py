"""Evaluation: ranking metrics (raw and filtered, all or sampled candidates), streamed over partitions."""
