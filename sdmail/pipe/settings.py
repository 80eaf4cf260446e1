"""The main.cf parameters the pipe agent reads, bound once per configuration (core/config.bind).

Field names are parameter names; defaults live only in core/params.py. The per-transport
`NAME_time_limit` has no registry entry of its own (its name depends on the transport), so
the service reads it from the configuration directly, falling back on command_time_limit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipeSettings:
    queue_directory: str
    mail_owner: str
    command_time_limit: int
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    export_environment: tuple[str, ...]
