"""The ``variables:`` section, and the base scope every ``${...}`` is checked against.

Variables: templates, undefined names, recursive interpolation; the built-in catalog
fills in the variables its default collector needs. The base scope holds
``${deployment.*}`` and ``${workflow.*}``, plus ``${env.*}`` and ``${steps.*}`` where
they may stand.
"""

from __future__ import annotations

from typing import Any

from afdp.workflow import catalog
from afdp.workflow.compiler.common import _Base
from afdp.workflow.expressions import ANY, BOOL, STRING
from afdp.workflow.interpolation import Template, TemplateError, variable_order
from afdp.workflow.scope import Open, Tree


class _Variables(_Base):
    """Variables and the base scope of ``${...}`` references."""

    def base_scope(self, *, env: bool = False, steps: bool = False) -> dict[str, Tree]:
        tree: dict[str, Tree] = {
            "deployment": dict(catalog.DEPLOYMENT_FIELDS),
            "workflow": {name: _value_type(value) for name, value in self.variables.items()},
        }
        if env:
            tree["env"] = Open("secret")
        if steps:
            tree["steps"] = dict(self.outputs)
        return tree

    def compile_variables(self) -> None:
        raw = self.mapping(self.data.get("variables"))
        # Declare every name first so variables may refer to each other in any order.
        declared_collectors = self.mapping(self.data.get("collectors"))
        defaults = {
            name: value
            for name, (collector, value) in catalog.DEFAULT_VARIABLES.items()
            if name not in raw and collector not in declared_collectors
        }
        raw = {**defaults, **raw}
        self.default_variables = set(defaults)
        self.variables = {
            name: value for name, value in raw.items() if isinstance(value, (str, int, float, bool))
        }
        references: dict[str, tuple[str, ...]] = {}
        for name, value in raw.items():
            if not isinstance(value, str):
                continue
            template = self.template(value, ("variables", name), self.base_scope(), secrets=False)
            self.variables[name] = template
            if template is not None:
                references[name] = tuple(
                    p.parts[1] for p in template.placeholders if p.parts[0] == "workflow"
                )
        try:
            variable_order(references)
        except TemplateError as exc:
            self.fail(("variables",), str(exc), prefer_key=True)


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, Template)):
        return STRING
    return ANY
