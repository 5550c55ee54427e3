"""The services the intake knows (``services.yaml``) and the settings of ``afdp serve``.

A services file::

    services:
      api:
        prefect_deployment: afdp-evidence/api      # flow name / deployment name
        github_repository: acme/api                # deployment_status webhooks from it
        environments: [production]                 # optional: other environments ignored
        parameters:                                # optional: extra flow parameters
          time_scale: 20
        retries: 2                                 # optional: failed runs run again (resumed)
        retry_delay_seconds: 30

An event for a service not listed is refused (404); nothing is started.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from afdp.errors import ConfigurationError
from afdp.evidence.files import read_at_most
from afdp.evidence.names import check_name, check_not_models
from afdp.evidence.yamldata import load_yaml

DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = 30
#: Flow parameters an event sets itself; a services file may not preset them.
EVENT_PARAMETERS = frozenset({"service", "deployment", "info", "trigger"})
#: Parameters of :func:`afdp.pipeline.flow.evidence_flow` a services file may preset.
ALLOWED_PARAMETERS = frozenset(
    {
        "workflow_path", "repository", "key", "tsa_urls", "public_key", "overrides", "phase",
        "time_scale", "signals", "signal_dir", "policy", "results_dir",
    }
)


@dataclass(frozen=True)
class ServiceConfig:
    """One service: its Prefect deployment and where its events may come from."""

    name: str
    prefect_deployment: str
    github_repository: str | None = None
    environments: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: A failed run (TSA, signer or Git briefly unavailable) runs again, resuming the branch.
    retries: int = DEFAULT_RETRIES
    retry_delay_seconds: int = DEFAULT_RETRY_DELAY


@dataclass(frozen=True)
class Services:
    """Every configured service, by name."""

    by_name: Mapping[str, ServiceConfig]

    def get(self, name: str) -> ServiceConfig | None:
        return self.by_name.get(name)

    def for_repository(self, full_name: str) -> list[ServiceConfig]:
        """Return the services whose ``github_repository`` is ``full_name`` (case-insensitive)."""
        wanted = full_name.lower()
        return [s for s in self.by_name.values() if (s.github_repository or "").lower() == wanted]


#: A services file names a few hundred services at most: a few KiB each.
MAX_SERVICES_BYTES = 4 << 20


def load_services(path: Path) -> Services:
    """Read a services file.

    Raises:
        ConfigurationError: unreadable, not YAML, or a service entry that is wrong (exit 2).
    """
    data = read_at_most(path, MAX_SERVICES_BYTES, "services file")  # /dev/zero is one line, not a hang
    try:
        document = load_yaml(data.decode("utf-8"))  # bounded: aliases, depth
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"services file {path} is not UTF-8 text: {exc.reason}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"services file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("services"), Mapping):
        raise ConfigurationError(f"services file {path}: expected a mapping 'services: {{NAME: {{...}}}}'")
    unknown_top = sorted(set(document) - {"services"})
    if unknown_top:
        raise ConfigurationError(f"services file {path}: unknown key(s) {', '.join(map(str, unknown_top))}")
    services: dict[str, ServiceConfig] = {}
    folded: dict[str, str] = {}
    for name, entry in document["services"].items():
        services[str(name)] = _service(str(name), entry, path)
        # one name to a reader, and one ref file on a case-insensitive file system
        other = folded.setdefault(str(name).casefold(), str(name))
        if other != str(name):
            raise ConfigurationError(f"services file {path}: services {other!r} and {str(name)!r} differ only in case "
                                     "(their branches would collide on a case-insensitive file system)")
    if not services:
        raise ConfigurationError(f"services file {path} lists no service")
    return Services(services)


def _service(name: str, entry: Any, path: Path) -> ServiceConfig:
    where = f"services file {path}: service {name!r}"
    try:
        check_name(name, what="service")
        # afdp/models/<service> holds impact models: every run refuses this service name,
        # so an event for it would be accepted for a run that can only fail
        check_not_models(name, None)
    except Exception as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping")
    keys = {"prefect_deployment", "github_repository", "environments", "parameters", "retries", "retry_delay_seconds"}
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    deployment = entry.get("prefect_deployment")
    if not isinstance(deployment, str) or deployment.count("/") != 1 or not all(deployment.split("/")):
        raise ConfigurationError(f"{where}: prefect_deployment must be 'FLOW/DEPLOYMENT'")
    repository = entry.get("github_repository")
    if repository is not None and (not isinstance(repository, str) or repository.count("/") != 1):
        raise ConfigurationError(f"{where}: github_repository must be 'OWNER/NAME'")
    environments = entry.get("environments") or []
    if not isinstance(environments, list) or not all(isinstance(e, str) for e in environments):
        raise ConfigurationError(f"{where}: environments must be a list of names")
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ConfigurationError(f"{where}: parameters must be a mapping")
    preset = sorted(set(parameters) & EVENT_PARAMETERS)
    if preset:
        raise ConfigurationError(f"{where}: parameters {', '.join(preset)} come from the event, not the file")
    unknown_params = sorted(set(parameters) - ALLOWED_PARAMETERS)
    if unknown_params:
        raise ConfigurationError(f"{where}: unknown flow parameter(s) {', '.join(map(str, unknown_params))}")
    retries = entry.get("retries", DEFAULT_RETRIES)
    delay = entry.get("retry_delay_seconds", DEFAULT_RETRY_DELAY)
    for what, value, top in (("retries", retries, 10), ("retry_delay_seconds", delay, 3600)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise ConfigurationError(f"{where}: {what} must be a whole number from 0 to {top}")
    return ServiceConfig(
        name=name,
        prefect_deployment=deployment,
        github_repository=repository,
        environments=tuple(environments),
        parameters=dict(parameters),
        retries=retries,
        retry_delay_seconds=delay,
    )


def is_loopback(host: str) -> bool:
    """Return True when ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
