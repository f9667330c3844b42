"""`python -m shardgraph ...` (also what `torchrun -m shardgraph train ...` runs)."""

from shardgraph.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
