"""`python -m shardgraph ...` (also what `torchrun -m shardgraph train ...` runs)."""

# a trainer of torchrun dies with its agent from the first moment (the imports below take seconds)
from shardgraph.utils.process import die_with_launcher

die_with_launcher()

from shardgraph.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
