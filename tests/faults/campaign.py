"""The whole reliability campaign (issue 18) as one command; its figures go into docs/reliability.md.

    python -m tests.faults.campaign --out campaign.json [--fuzz-examples 1000] [--moments 20]

1. the fuzz tests with SHARDGRAPH_FUZZ_EXAMPLES examples per format, outcome classes collected;
2. the corruption, untrusted-input and full-disk tests of tests/test_reliability.py;
3. the kill -9 matrix (tests/faults/kill_matrix.py) over every long command;
4. the soak (tests/faults/soak.py): about an hour of training killed every few minutes, beside an
   undisturbed twin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pytest(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout[-4000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    parser.add_argument("--fuzz-examples", type=int, default=1000)
    parser.add_argument("--moments", type=int, default=20)
    parser.add_argument("--size", choices=["small", "large"], default="small",
                        help="graph of the kill matrix: small (300 entities, 4k edges), large (20k, 300k)")
    parser.add_argument("--soak-epochs", type=int, default=160)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: fuzz, reliability, kills, soak")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    result: dict[str, object] = {}
    if "fuzz" not in skip:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            rc, tail = pytest(["tests/test_fuzz.py"], {"SHARDGRAPH_FUZZ_EXAMPLES": str(args.fuzz_examples),
                                                       "SHARDGRAPH_FUZZ_REPORT": report.name})
            result["fuzz"] = {"examples_per_format": args.fuzz_examples, "exit": rc, "pytest": tail.splitlines()[-1:],
                              **json.loads(Path(report.name).read_text() or "{}")}
            print(f"fuzz: exit {rc}", flush=True)
    if "reliability" not in skip:
        rc, tail = pytest(["tests/test_reliability.py", "-v"])
        result["reliability"] = {"exit": rc, "tests": [line for line in tail.splitlines() if "::" in line]}
        print(f"reliability: exit {rc}", flush=True)
    if "kills" not in skip:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            proc = subprocess.run([sys.executable, "-m", "tests.faults.kill_matrix", "--moments", str(args.moments),
                                   "--size", args.size, "--report", report.name], cwd=REPO, text=True)
            result["kills"] = {"exit": proc.returncode, **json.loads(Path(report.name).read_text() or "{}")}
            print(f"kills: exit {proc.returncode}", flush=True)
    if "soak" not in skip:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            proc = subprocess.run([sys.executable, "-m", "tests.faults.soak", "--epochs", str(args.soak_epochs),
                                   "--report", report.name], cwd=REPO, text=True)
            result["soak"] = {"exit": proc.returncode, **json.loads(Path(report.name).read_text() or "{}")}
            print(f"soak: exit {proc.returncode}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if all(part.get("exit") == 0 for part in result.values() if isinstance(part, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
