"""The ledger commands' former home, kept so ``from afdp.cli.ledger import ...`` still works.

The commands now live one group per module: :mod:`afdp.cli.init` (init, keys, trust),
:mod:`afdp.cli.record` (record, seal), :mod:`afdp.cli.verify` (verify), :mod:`afdp.cli.log`
(log), with their shared options in :mod:`afdp.cli.options`. Deprecated: import from
those modules.
"""

from __future__ import annotations

from afdp.cli.init import init_cmd, keys_group, trust_group
from afdp.cli.log import log_cmd
from afdp.cli.options import (
    _emit_json,
    _signer,
    _tsa_urls,
    deployment_option,
    json_option,
    key_option,
    keyless_option,
    public_key_option,
    repo_option,
    service_option,
    tsa_option,
)
from afdp.cli.record import record_cmd, seal_cmd
from afdp.cli.verify import verify_cmd

__all__ = [
    "_emit_json",
    "_signer",
    "_tsa_urls",
    "deployment_option",
    "init_cmd",
    "json_option",
    "key_option",
    "keyless_option",
    "keys_group",
    "log_cmd",
    "public_key_option",
    "record_cmd",
    "repo_option",
    "seal_cmd",
    "service_option",
    "trust_group",
    "tsa_option",
    "verify_cmd",
]
