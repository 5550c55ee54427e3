"""What durability costs per record (figures, not assertions: machines are shared and noisy).

    python benchmarks/bench_durability.py [--rounds 6] [--records 15] [--dir DIR]

Appends records one at a time (``append_record``: sign, RFC 3161 from the embedded TSA
over loopback HTTP, commit, compare-and-swap) to three repositories, taking turns round
by round so that a change of machine load hits all three alike:

- ``core.fsync`` unset (Git's default: nothing flushed; a record survives the writer's
  crash, not necessarily a power cut);
- ``core.fsync committed`` (AFDP flushes the record's objects before the ref moves and
  the ref after: a record acknowledged is on disk);
- libgit2 flushing each object as it writes it (``GIT_OPT_ENABLE_FSYNC_GITDIR``), for
  comparison with flushing once per append.

Prints the median and 90th percentile per record of each (docs/evidence.md, "Durability").
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pygit2

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository

MODES = ("core.fsync unset", "core.fsync committed", "libgit2 per object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--records", type=int, default=15, help="records per repository per round")
    parser.add_argument("--dir", type=Path, help="where the repositories live (default: the temporary folder)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        signer = load_signer(str(root / "dev.key"))
        repos = {}
        for number, mode in enumerate(MODES):
            repos[mode] = root / f"repo-{number}"
            init_repository(repos[mode], bare=True)
            if mode == "core.fsync committed":
                pygit2.Repository(str(repos[mode])).config["core.fsync"] = "committed"
        with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
            for round_ in range(args.rounds):
                for mode in MODES:
                    pygit2.option(pygit2.enums.Option.ENABLE_FSYNC_GITDIR, 1 if mode == "libgit2 per object" else 0)
                    for i in range(args.records):
                        draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"s{i}", result={"i": i})
                        started = time.perf_counter()
                        append_record(repos[mode], service="api", deployment=f"d{round_}", draft=draft, signer=signer, tsa_urls=[server.url])
                        if i:  # the first also writes the genesis record
                            times[mode].append(time.perf_counter() - started)
        pygit2.option(pygit2.enums.Option.ENABLE_FSYNC_GITDIR, 0)
    print(f"load average {os.getloadavg()[0]:.2f}; files under {args.dir or tempfile.gettempdir()}")
    for mode, samples in times.items():
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(f"{mode:22s} median {statistics.median(samples) * 1000:7.2f} ms  p90 {p90 * 1000:7.2f} ms  (n={len(samples)})")


if __name__ == "__main__":
    main()
