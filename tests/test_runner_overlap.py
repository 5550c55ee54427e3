"""The runner writes each step's record before the next step starts (no writer behind).

docs/flows.md ("Speed") says why no background writer: a decision or an action must
never run on evidence that has not landed. Real parts: a Git repository, the embedded
TSA over loopback HTTP, ``run_workflow`` with its progress hook, which is called as each
step starts.
"""

from __future__ import annotations

from test_runner import predicates, request_for, workflow_from

from afdp.pipeline.runner import run_workflow

STEPS = """\
name: ordered
version: "1"
workflow:
  pre_deployment:
    - wait: 1s
    - wait_for_signal: go
  deployment:
    - mark_deployment_time
  post_deployment:
    - wait: 1s
"""


class _Seen:
    """At each step's start, the steps already on the branch."""

    def __init__(self, repo) -> None:
        self.repo = repo
        self.at_start: dict[str, list[str]] = {}

    def starting(self, step, seconds) -> None:
        self.at_start[step.name] = [p["step"]["name"] for p in predicates(self.repo)]

    def __call__(self, report) -> None:
        pass


def test_every_step_starts_only_after_the_record_of_the_step_before_is_on_the_branch(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, STEPS)
    seen = _Seen(repo)
    outcome = run_workflow(request_for(workflow, repo, signer, tsa, progress=seen))
    assert outcome.sealed
    names = [step.name for step in workflow.steps]
    assert list(seen.at_start) == names
    for index, name in enumerate(names):
        assert seen.at_start[name] == ["genesis", *names[:index]], name
    # and the records chain in step order
    assert [p["step"]["name"] for p in predicates(repo)] == ["genesis", *names, "seal"]
