"""Workflow benchmarks (figures, not assertions: machines are shared and noisy).

    python benchmarks/bench_workflow.py [--steps 500] [--runs 20]

1. validate a generated workflow of ``--steps`` steps (targets: < 200 ms for 500 steps):
   safe YAML load, JSON Schema, compile to the typed model, default admission policy;
   the first run (schemas compiled, modules imported) and the median of the rest;
2. ``afdp validate`` and ``afdp plan`` wall time on each shipped example, as a fresh
   process (target: < 0.5 s: no Prefect on that path), best and median of 5.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def generate(steps: int) -> str:
    """Return a valid workflow of exactly ``steps`` steps (waits, captures, analyses, decisions)."""
    lines = [
        "name: generated",
        'version: "1.0"',
        "variables:",
        "  ENVIRONMENT: production",
        "collectors:",
        "  prometheus: {type: prometheus, url: 'http://prometheus:9090'}",
        "workflow:",
        "  pre_deployment:",
        "    - capture_baseline:",
        "        duration: 5m",
        "        metrics: [response_time_p50, response_time_p99, error_rate, active_users]",
        "  deployment:",
        "    - mark_deployment_time",
        "  post_deployment:",
    ]
    count = 2
    block = 0
    tail = 2  # decisions + generate_training_record
    while count + 3 <= steps - tail:
        block += 1
        lines += [
            "    - wait: 30s",
            f"      name: settle_{block}",
            "      when: workflow.ENVIRONMENT == 'production'",
            "    - capture_impact: {duration: 1m}",
            f"      name: impact_{block}",
            f"    - name: analysis_{block}",
            "      analyze_differences:",
            f"        impact: impact_{block}",
            "        thresholds: {response_time_increase: 10ms, error_rate_increase: 0.5%}",
        ]
        count += 3
    while count < steps - tail:
        count += 1
        lines += ["    - wait: 1s", f"      name: pad_{count}"]
    lines += [
        "    - decisions",
        "    - generate_training_record",
        "success_criteria:",
        "  - response_time_p99.increase < 10ms",
        "decisions:",
        "  rollback: {condition: error_rate.increase > 1%, action: rollback}",
        "  fine: {condition: all_metrics_within_normal, action: mark_successful}",
    ]
    return "\n".join(lines) + "\n"


def bench_validate(steps: int, runs: int) -> None:
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import parse
    from afdp.workflow.policy import load_policy

    text = generate(steps)
    policy = load_policy() if steps <= 1000 else None  # the default allows 1000 steps
    times: list[float] = []
    workflow = None
    for _ in range(runs + 1):
        started = time.perf_counter()
        document = parse(text, name="generated.yaml")
        workflow = compile_document(document)
        if policy is not None:
            policy.admit(workflow, document)
        times.append(time.perf_counter() - started)
    assert workflow is not None and len(workflow.steps) == steps, len(workflow.steps)
    first, rest = times[0], times[1:]
    print(
        f"validate {steps}-step workflow ({len(text) / 1024:.0f} KiB): first {first * 1000:.0f} ms, "
        f"median {statistics.median(rest) * 1000:.0f} ms, best {min(rest) * 1000:.0f} ms "
        f"over {runs} runs (target < 200 ms)"
    )


def bench_cli(repeats: int = 5) -> None:
    from afdp.workflow.starter import example_files

    for example in example_files():
        for args in (
            ["validate", str(example)],
            ["plan", str(example), "--set", "deployment.service=api", "--set", "deployment.id=d-1"],
        ):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "afdp", *args], capture_output=True, text=True
                )
                times.append(time.perf_counter() - started)
                assert done.returncode == 0, done.stdout + done.stderr
            print(
                f"afdp {args[0]:<8} {example.name:<32} best {min(times) * 1000:.0f} ms, "
                f"median {statistics.median(times) * 1000:.0f} ms (target < 500 ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-cli", action="store_true", help="Skip the process wall-time part.")
    args = parser.parse_args()
    bench_validate(args.steps, args.runs)
    if not args.no_cli:
        bench_cli()


if __name__ == "__main__":
    main()
