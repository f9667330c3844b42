"""`python -m shardgraph ...` (also what `torchrun -m shardgraph train ...` runs)."""

import os

if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
    # a trainer of torchrun: die with its agent, from the first moment (imports take seconds)
    from shardgraph.utils.process import die_with_launcher

    die_with_launcher()

from shardgraph.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
