"""The main.cf parameters local delivery reads, bound once per configuration (core/config.bind).

Field names are parameter names; defaults live only in core/params.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalSettings:
    myhostname: str
    myorigin: str
    mail_name: str
    queue_directory: str
    socket_directory: str
    ipc_timeout: int
    alias_maps: tuple[str, ...]
    default_privs: str
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    propagate_unmatched_extensions: tuple[str, ...]
    expand_owner_alias: bool
    forward_path: tuple[str, ...]
    home_mailbox: str
    mail_spool_directory: str
    mailbox_command: str
    mailbox_size_limit: int
    mailbox_delivery_lock: tuple[str, ...]
    deliver_lock_attempts: int
    deliver_lock_delay: int
    stale_lock_time: int
    allow_mail_to_commands: tuple[str, ...]
    allow_mail_to_files: tuple[str, ...]
    command_time_limit: int
    local_command_shell: str
    prepend_delivered_header: str
    enable_original_recipient: bool
    export_environment: tuple[str, ...]
    command_expansion_filter: str
