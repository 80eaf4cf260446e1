"""The main.cf parameters virtual delivery reads, bound once per configuration (core/config.bind).

Field names are parameter names; defaults live only in core/params.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VirtualSettings:
    virtual_mailbox_maps: tuple[str, ...]
    virtual_mailbox_base: str
    virtual_uid_maps: tuple[str, ...]
    virtual_gid_maps: tuple[str, ...]
    virtual_minimum_uid: int
    virtual_mailbox_limit: int
    virtual_mailbox_lock: tuple[str, ...]
    deliver_lock_attempts: int
    deliver_lock_delay: int
    stale_lock_time: int
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    enable_original_recipient: bool
