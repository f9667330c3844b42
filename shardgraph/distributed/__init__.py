"""Several trainers on torch.distributed (launched by torchrun): bucket locks, partition exchange, sync."""
