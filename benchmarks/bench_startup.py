"""Start-up of the commands a user runs most: ``afdp --help``, ``afdp validate``, ``afdp verify``.

    python benchmarks/bench_startup.py [--runs 10] [--python PATH] [--imports] [--no-bytecode]

Each command runs ``--runs`` times as a fresh process (what the installed ``afdp``
script runs, with this checkout first on ``PYTHONPATH``) and the median and best wall
time and CPU time (user + system of the child) are printed, beside a bare ``python -c
pass`` (what any Python command pays before its first import). CPU time is the steadier
figure on a shared machine; the load average is printed with the figures. ``verify``
checks a small real branch made here: genesis, four steps and a seal, signed with a
fresh key and time-stamped by the embedded TSA over loopback HTTP; its verdict goes to
a stream that is no terminal (``/dev/null``), as in CI; ``verify (terminal)`` prints it
on a pseudo-terminal instead (rich draws it), and ``--json`` and ``verify --help`` are
measured too. ``validate`` reads
the shipped example ``api_deployment_impact.yaml``.

Byte code is written to a temporary ``PYTHONPYCACHEPREFIX`` (a warm-up run fills it),
as an installed wheel has it: with ``PYTHONDONTWRITEBYTECODE`` set, a source checkout
would recompile every AFDP module on every run (``--no-bytecode`` measures that case).
``--python`` runs the commands under another interpreter, e.g. a fresh virtualenv
holding only AFDP's dependencies (a developer's environment may hold more: with moto
installed, securesystemslib's signer package imports boto3, about 0.1 s). ``--imports``
also prints, per command, the packages that took the most import time (``-X
importtime``, self time summed per top-level package).

Figures, not assertions (machines are shared and noisy); which heavy packages each
command must not load is asserted in ``tests/test_cli_startup.py``.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: What the installed ``afdp`` script runs (pip's console-script wrapper). Not ``python -m
#: afdp``: runpy imports importlib.util and more before AFDP's first line.
ENTRY_POINT = "import sys; from afdp.cli import main; sys.exit(main())"


def make_branch(root: Path) -> list[str]:
    """Write a small sealed branch and a trust policy; return the verify arguments."""
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record, seal
    from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
    from afdp.evidence.signing import generate_key, load_signer
    from afdp.evidence.store import init_repository
    from afdp.evidence.trust import write_trust_policy

    init_tsa(root / "tsa")
    generate_key(root / "dev.key")
    write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
    repo = root / "evidence"
    init_repository(repo)
    signer = load_signer(str(root / "dev.key"))
    with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
        for i, step in enumerate(["capture_baseline", "mark_deployment_time", "capture_impact", "analyze_differences"]):
            draft = rec.RecordDraft(kind=rec.KIND_STEP, step=step, result={"i": i, "p99_ms": 120.0 + i})
            append_record(repo, service="api", deployment="d1", draft=draft, signer=signer, tsa_urls=[server.url])
        seal(repo, service="api", deployment="d1", signer=signer, tsa_urls=[server.url])
    return ["verify", "--repo", str(repo), "--service", "api", "--deployment", "d1", "--trust", str(root / "trust.yaml")]


#: Commands whose stdout is a pseudo-terminal (what a user at a terminal sees).
ON_A_TERMINAL = "(terminal)"


def run_once(argv: list[str], env: dict[str, str], *, terminal: bool = False) -> tuple[float, float]:
    """Run ``argv`` once (stdout on a pseudo-terminal if ``terminal``, else /dev/null);
    return (wall seconds, CPU seconds of the child)."""
    import pty

    primary, secondary = pty.openpty() if terminal else (-1, -1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        stdout = secondary if terminal else subprocess.DEVNULL
        done = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, check=False)
    finally:
        if terminal:  # a verdict line fits the terminal's buffer: nothing needs reading
            os.close(secondary)
            os.close(primary)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(argv: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """Self import time (ms) per top-level package, largest first (``-X importtime``)."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True, check=False)
    totals: collections.Counter[str] = collections.Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, _, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
        parts = name.split(".")
        totals[".".join(parts[:2]) if parts[0] == "afdp" else parts[0]] += int(self_us)
    return [(name, us / 1000) for name, us in totals.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the commands with")
    parser.add_argument("--imports", action="store_true", help="also print the heaviest imports per command")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="run with PYTHONDONTWRITEBYTECODE=1 and no cache prefix, as a source checkout without "
        "__pycache__ does (every AFDP module compiled on every run)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="afdp-startup-") as tmp:
        root = Path(tmp)
        verify = make_branch(root)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env.pop("PYTHONPYCACHEPREFIX", None)
        else:
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        example = ROOT / "afdp" / "workflow" / "examples" / "api_deployment_impact.yaml"
        commands = {
            "python -c pass": [args.python, "-c", "pass"],
            "afdp --help": [args.python, "-c", ENTRY_POINT, "--help"],
            "afdp verify --help": [args.python, "-c", ENTRY_POINT, "verify", "--help"],
            "afdp validate": [args.python, "-c", ENTRY_POINT, "validate", str(example)],
            "afdp verify": [args.python, "-c", ENTRY_POINT, *verify],
            f"afdp verify {ON_A_TERMINAL}": [args.python, "-c", ENTRY_POINT, *verify],
            "afdp verify --json": [args.python, "-c", ENTRY_POINT, *verify, "--json"],
        }
        for name, argv in commands.items():
            run_once(argv, env, terminal=name.endswith(ON_A_TERMINAL))  # warm-up: byte code written, files in the page cache

        load = os.getloadavg()
        print(f"python {args.python}{' (no byte code)' if args.no_bytecode else ''}; {args.runs} runs each; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'command':<23} {'wall median':>12} {'wall best':>10} {'CPU median':>11} {'CPU best':>9}")
        for name, argv in commands.items():
            terminal = name.endswith(ON_A_TERMINAL)
            walls, cpus = zip(*(run_once(argv, env, terminal=terminal) for _ in range(args.runs)), strict=True)
            print(
                f"{name:<23} {statistics.median(walls):>10.3f} s {min(walls):>8.3f} s "
                f"{statistics.median(cpus):>9.3f} s {min(cpus):>7.3f} s"
            )
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if args.imports:
            for name, argv in commands.items():
                if name.startswith("afdp") and not name.endswith(ON_A_TERMINAL):
                    heaviest = ", ".join(f"{pkg} {ms:.1f}" for pkg, ms in import_profile(argv, env, 12))
                    print(f"{name} imports (ms self): {heaviest}")


if __name__ == "__main__":
    main()
