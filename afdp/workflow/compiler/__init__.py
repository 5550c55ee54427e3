"""From a parsed document to a validated :class:`~afdp.workflow.model.Workflow`.

Checks run in this order, and every problem is collected before anything is raised:

1. Structure, against ``evidence-schema/workflow.v1.schema.json``
   (:mod:`afdp.workflow.structure`).
2. Variables: templates, undefined names, recursive interpolation (:mod:`.variables`).
3. Collectors and metrics: URLs, per-type fields, units; the built-in catalog fills in
   metrics the workflow uses but does not declare (:mod:`.collectors`, :mod:`.metrics`).
4. Analyzers (:mod:`.analyzers`), then steps in execution order (:mod:`.steps`; stages
   expanded after the deployment mark, :mod:`.stages`): names, typed parameters
   (:mod:`.captures`, :mod:`.sql`), the before/after pairing of analyses
   (:mod:`.analyses`), thresholds against the metrics they cover, ``when``/``unless``
   and ``${...}`` against what exists at that point (only earlier steps' outputs,
   :mod:`.outputs`).
5. Decisions and success criteria, against the analysis they run after
   (:mod:`.decisions`); outputs against the steps that produce them (:mod:`.outputs`).
6. Actions: how rollback, alert and mark_successful are carried out (an argv command or
   a webhook), with ``${...}`` checked against what exists when an action can first run
   (:mod:`.actions`).

The compiler is written defensively: it runs even when the structure is wrong (so
semantic problems show up in the same report), skipping any part whose shape the
schema already rejected.

Each section of the language is one module and one mixin class over the shared state
and helpers of :mod:`.common`; :mod:`.document` combines them and runs them in order.
This package is the one entry point: import from ``afdp.workflow.compiler``.
"""

from __future__ import annotations

from afdp.workflow.compiler.document import SCHEMA, compile_document
from afdp.workflow.compiler.metrics import RESERVED_NAMES
from afdp.workflow.compiler.steps import COMMON_STEP_KEYS, FLAT_PHASE

__all__ = ["COMMON_STEP_KEYS", "FLAT_PHASE", "RESERVED_NAMES", "SCHEMA", "compile_document"]
