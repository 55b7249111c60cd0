"""The long fuzz run: at least 100,000 cases over every target in tests/faults/fuzztargets.py.

    .venv/bin/python bench/fuzz.py                   # 100,000 cases, seed 1
    .venv/bin/python bench/fuzz.py --cases 1000000 --seed 7
    .venv/bin/python bench/fuzz.py --atheris session -runs=50000  # coverage-guided, one target

Cases are split evenly across the targets; 90 % are mutations of real inputs (seeds), 10 %
random bytes. Prints cases/s per target and every distinct finding (an exception outside the
target's contract) with a reproducer in hex. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.fuzztargets import Finding, Target, mutate, targets


def run_target(t: Target, cases: int, rnd: random.Random) -> tuple[float, dict[str, bytes]]:
    seeds = t.seeds()
    findings: dict[str, bytes] = {}
    start = time.perf_counter()
    for _ in range(cases):
        if rnd.random() < 0.9:
            data = mutate(rnd.choice(seeds), rnd)
        else:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(256)))
        try:
            t.run(data)
        except Finding as e:
            findings.setdefault(str(e).splitlines()[0][:200], data)
    return time.perf_counter() - start, findings


def run_atheris(t: Target, extra: list[str]) -> None:  # pragma: no cover - interactive
    """libFuzzer through atheris, starting from the target's seeds (a temporary corpus
    directory); *extra* are libFuzzer flags such as ``-runs=100000``."""
    import tempfile

    import atheris

    corpus = Path(tempfile.mkdtemp(prefix=f"pivtool-fuzz-{t.name}-"))
    for i, seed in enumerate(t.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    for seed in t.seeds():  # imports everything the target touches...
        t.run(seed)
    atheris.instrument_all()  # ...so that all of it reports coverage
    atheris.Setup([sys.argv[0], *extra, str(corpus)], t.run)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated target names")
    parser.add_argument("--atheris", metavar="TARGET", help="coverage-guided run of TARGET")
    args, extra = parser.parse_known_args()
    # cryptography warns about lenient parses (negative serials, BER PKCS#12); expected here.
    warnings.simplefilter("ignore")
    chosen = targets()
    if args.atheris:
        run_atheris(next(t for t in chosen if t.name == args.atheris), extra)
        return 0
    if args.only:
        names = set(args.only.split(","))
        chosen = [t for t in chosen if t.name in names]
    per = -(-args.cases // len(chosen))
    rnd = random.Random(args.seed)
    total_cases, total_time = 0, 0.0
    all_findings: dict[str, tuple[str, bytes]] = {}
    counts: collections.Counter[str] = collections.Counter()
    print(f"{'target':10} {'cases':>8} {'seconds':>8} {'cases/s':>9} findings")
    for t in chosen:
        seconds, findings = run_target(t, per, rnd)
        total_cases += per
        total_time += seconds
        counts[t.name] = len(findings)
        for k, v in findings.items():
            all_findings[k] = (t.name, v)
        print(f"{t.name:10} {per:8d} {seconds:8.1f} {per / seconds:9.0f} {len(findings)}")
    print(f"{'total':10} {total_cases:8d} {total_time:8.1f} {total_cases / total_time:9.0f} "
          f"{len(all_findings)}")
    for message, (name, data) in all_findings.items():
        print(f"\nFINDING [{name}] {message}\n  reproduce: bytes.fromhex('{data.hex()}')")
    return 1 if all_findings else 0


if __name__ == "__main__":
    sys.exit(main())
