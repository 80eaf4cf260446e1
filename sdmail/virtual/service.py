"""`python3 -m sdmail.virtual`: the virtual delivery agent as a socket-activated service, and
the order of things for one recipient (see the package docstring).

`VirtualDelivery.deliver(message, recipient)` decides and hands the write to a child made
by `agent.run_as`; `main` gives the agent skeleton (sdmail/agent.py) a VirtualDelivery for
each connection's worker.

Failure modes: `deliver` raises PermFail for a forwarding loop (5.4.6) and an unknown
recipient (5.1.1), TempFail for a table that cannot be read (4.3.0) and a configuration
it cannot use (4.3.5, with a warning naming recipient, value and parameter); the write's
own outcome is returned. `main` returns an exit status: 78 for a main.cf that does not
parse, a virtual_mailbox_lock style it does not know, or a missing `virtual` socket.
"""

from __future__ import annotations

import pwd
import time
from collections.abc import Sequence
from typing import Any, Final

from sdmail.agent import Agent, Identity, Message, Outcome, run_agent, run_as
from sdmail.core.deliver_request import RequestRecipient
from sdmail.core.delivery_headers import envelope_headers, has_delivered_to
from sdmail.core.dsn import PermFail, Status, TempFail
from sdmail.core.log import msg_warning
from sdmail.core.mailstore import LockPolicy
from sdmail.core.skeleton import ExitCode, Fatal, PlainDaemonContext
from sdmail.core.tables.table import TableError
from sdmail.virtual.mailbox import Delivery, mailbox_action
from sdmail.virtual.maps import MapsError, VirtualMaps, mailbox_place
from sdmail.virtual.settings import VirtualSettings

PROGRAM: Final = "virtual"
CONFIGURATION_ERROR: Final = Status("4.3.5", "mail system configuration error")


class VirtualDelivery:
    """Delivers to virtual recipients with one configuration; one per worker process."""

    def __init__(self, settings: VirtualSettings) -> None:
        self.settings = settings
        self.lock = LockPolicy.from_styles(
            settings.virtual_mailbox_lock,
            settings.deliver_lock_attempts,
            settings.deliver_lock_delay,
            settings.stale_lock_time,
        )
        self.maps = VirtualMaps(settings)

    def close(self) -> None:
        self.maps.close()

    def deliver(self, message: Message, requested: RequestRecipient) -> Outcome:
        """Deliver MESSAGE to REQUESTED; the outcome to log."""
        address = requested.address.lower()
        if has_delivered_to(message.header_block(), requested.address):
            raise PermFail(Status("5.4.6", f"mail forwarding loop for {requested.address}"))
        result = self._lookup(message.queue_id, "virtual_mailbox_maps", address)
        if result is None:
            raise PermFail(Status("5.1.1", f'unknown user: "{address}"'))
        try:
            place = mailbox_place(self.settings.virtual_mailbox_base, result)
            uid, gid = self.maps.owner(address)
        except MapsError as exc:
            msg_warning(message.queue_id, f"recipient {address}: {exc}")
            raise TempFail(CONFIGURATION_ERROR) from None
        except TableError as exc:
            raise self._table_trouble(message.queue_id, address, exc) from None
        if message.verifying:
            kind = "maildir" if place.maildir else "mailbox"
            return Outcome(Status("2.0.0", f"delivers to {kind}"))
        delivery = Delivery(
            place=place,
            sender=message.sender,
            headers=self._headers(message, requested),
            content=message.content(),
            when=time.time(),
            size_limit=self.settings.virtual_mailbox_limit,
            lock=self.lock,
        )
        return Outcome(run_as(_owner(uid, gid), mailbox_action(delivery)).status)

    def _lookup(self, queue_id: str, parameter: str, address: str) -> str | None:
        try:
            return self.maps.find(parameter, address)
        except TableError as exc:
            raise self._table_trouble(queue_id, address, exc) from None

    @staticmethod
    def _table_trouble(queue_id: str, address: str, exc: TableError) -> TempFail:
        msg_warning(queue_id, f"recipient {address}: table lookup problem: {exc}")
        return TempFail(Status("4.3.0", "virtual mailbox table lookup problem"))

    def _headers(self, message: Message, requested: RequestRecipient) -> bytes:
        original = None
        if self.settings.enable_original_recipient:
            original = requested.orig_address or requested.address
        return envelope_headers(
            return_path=message.sender, original_to=original, delivered_to=requested.address
        )


def _owner(uid: int, gid: int) -> Identity:
    """The identity the child takes: the account of UID when there is one, else the bare
    numbers (virtual mailbox owners often have no account)."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    return Identity(name=name, uid=uid, gid=gid, home="/", shell="")


def make_agent(ctx: PlainDaemonContext[Any]) -> Agent:
    """The Agent one worker serves its connection with."""
    settings: VirtualSettings = ctx.settings
    try:
        delivery = VirtualDelivery(settings)
    except ValueError as exc:
        raise Fatal(f"virtual_mailbox_lock: {exc}", ExitCode.CONFIG) from None
    return Agent(PROGRAM, deliver_recipient=delivery.deliver, close=delivery.close)


def main(argv: Sequence[str] | None = None) -> int:
    return run_agent(PROGRAM, argv, make_agent, settings=VirtualSettings)
