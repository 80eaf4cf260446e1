"""qmgr's part in fast flush: each deferral for an eligible site goes to the flush service.

Postfix's defer code calls flush_add(domain, queue_id) for every recipient it defers;
here `FastFlushLog` is the hook `StatusLogs` calls with the queue ID and the deferred
recipient's address.  Mail for a domain outside `fast_flush_domains` costs nothing
more (the list is asked first, in this process); for an eligible one the request is
handed to `$socket_directory/flush` without waiting for the work (core/flush_proto.add).

Failure modes: never raises.  A flush service that cannot be reached, or a
fast_flush_domains table that fails, is a warning: the mail stays deferred and goes
at its retry time or on `postqueue -f`, only ETRN misses it.
"""

from __future__ import annotations

from sdmail.core import flush_proto
from sdmail.core.config import Config, ConfigError
from sdmail.core.flush_proto import FlushDomains
from sdmail.core.log import msg_warning
from sdmail.core.match_list import MatchListError
from sdmail.core.tables.table import TableError


class FastFlushLog:
    """Adds (site, queue ID) to the flush service's logs for eligible sites."""

    def __init__(self, cfg: Config) -> None:
        self.socket_directory = cfg.get("socket_directory")
        try:
            self.domains = FlushDomains(
                cfg.get_list("fast_flush_domains"),
                cfg.get_list("parent_domain_matches_subdomains"),
            )
        except MatchListError as exc:
            raise ConfigError(str(exc), name="fast_flush_domains") from None

    def __call__(self, queue_id: str, address: str) -> None:
        _, at, site = address.rpartition("@")
        if not at or not flush_proto.valid_site(site):
            return
        try:
            if not self.domains.eligible(site):
                return
        except (MatchListError, TableError) as exc:
            msg_warning(queue_id, f"fast_flush_domains: {exc}")
            return
        if not flush_proto.add(self.socket_directory, site, queue_id):
            msg_warning(queue_id, f"{site}: flush service failure: cannot reach the flush service")
