"""`python3 -m sdmail.pipe -n NAME`: the pipe transport NAME as a socket-activated service,
and one delivery: the definition read afresh, the checks, the command run as `user=`.

`PipeDelivery.deliver(message, recipients)` gives every recipient of the request the one
outcome of the one command run (Postfix runs the command once per request; `${recipient}`
expands to every recipient). In order: the definition (pipe/definition) is read, `user=`
resolved; flags `D` and `O` need one recipient per request; a message over `size=`
bounces (`5.2.3 message too large`); with `D`, a `Delivered-To:` naming the recipient
bounces (`5.4.6 mail forwarding loop for ADDRESS`); the arguments are expanded
(pipe/macros) and the message shaped (pipe/content); a child made by `agent.run_as`
becomes `user=`, changes to `directory=` (else the queue directory, else /), and runs
the command with core/pipe_command under `NAME_time_limit` (else command_time_limit).
Exit 0 is `delivered via NAME service (OUTPUT)`; other ends are Postfix's (core/pipe_command:
EX_TEMPFAIL and EX_OSERR and signals defer, a leading enhanced code in the output is
used, the time limit bounces 5.3.0, other statuses bounce).

A definition that is missing or wrong, an unknown or privileged `user=`, or `D`/`O` with
several recipients defer every recipient with `4.3.5 mail system configuration error`,
and a warning names the file, line and problem: fixing the file fixes the queued mail.

Failure modes: `deliver` never raises for a problem of the definition or the command
(each is a status). `main` returns an exit status: 64 without a usable `-n NAME`, 78 for a
main.cf that does not parse (a bad `NAME_time_limit` included) or a missing socket NAME.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from sdmail.agent import Agent, Message, Outcome, run_agent, run_as
from sdmail.core.config import Config
from sdmail.core.deliver_request import RequestRecipient
from sdmail.core.delivery_headers import has_delivered_to
from sdmail.core.dsn import Status
from sdmail.core.log import msg_warning, setup_logging
from sdmail.core.pipe_command import command_status, printable_output, run_command
from sdmail.core.service_name import ServiceNameError, take_service_name
from sdmail.core.skeleton import ExitCode, PlainDaemonContext
from sdmail.pipe.content import Envelope, command_input
from sdmail.pipe.definition import (
    PipeDefinition,
    PipeDefinitionError,
    command_identity,
    definition_path,
    read_definition,
)
from sdmail.pipe.macros import expand_argv, recipient_values, sender_value
from sdmail.pipe.settings import PipeSettings

PROGRAM: Final = "pipe"
COMMAND_PATH: Final = "/usr/bin:/bin"  # Postfix's _PATH_DEFPATH for delivery commands
SUCCESS_OUTPUT_LIMIT: Final = 100
CONFIGURATION_ERROR: Final = Status("4.3.5", "mail system configuration error")
SINGLE_RECIPIENT_FLAGS: Final = {"D": "Delivered-To:", "O": "X-Original-To:"}


class PipeDelivery:
    """Delivers through the pipe transport TRANSPORT with one configuration."""

    def __init__(
        self, transport: str, settings: PipeSettings, config_directory: Path, time_limit: int
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.path = definition_path(config_directory, transport)
        self.time_limit = time_limit

    def deliver(self, message: Message, recipients: Sequence[RequestRecipient]) -> list[Outcome]:
        """One command run for all RECIPIENTS; its outcome for each."""
        status = self.status(message, recipients)
        return [Outcome(status) for _ in recipients]

    def status(self, message: Message, recipients: Sequence[RequestRecipient]) -> Status:
        try:
            definition = read_definition(self.path)
            identity = command_identity(definition, self.settings.mail_owner)
        except PipeDefinitionError as exc:
            msg_warning(message.queue_id, f"pipe transport {self.transport}: {exc}")
            return CONFIGURATION_ERROR
        for flag, header in SINGLE_RECIPIENT_FLAGS.items():
            if flag in definition.flags and len(recipients) > 1:
                msg_warning(
                    message.queue_id,
                    f"pipe flag `{flag}' ({header}) requires "
                    f"{self.transport}_destination_recipient_limit = 1",
                )
                return CONFIGURATION_ERROR
        if 0 < definition.size_limit < message.queue_file.content_size:
            return Status("5.2.3", "message too large")
        first = recipients[0]
        if "D" in definition.flags and has_delivered_to(message.header_block(), first.address):
            return Status("5.4.6", f"mail forwarding loop for {first.address}")
        argv = self._argv(message, recipients, definition)
        if any("\0" in arg for arg in argv):
            return Status("4.3.0", "a command argument holds a NUL character")
        if message.verifying:
            return Status("2.0.0", f"delivers to command: {argv[0]}")
        sender = message.sender or definition.null_sender
        data = command_input(
            message.content(),
            Envelope(sender, first.orig_address or first.address, first.address, time.time()),
            definition.flags,
            definition.eol,
        )
        action = command_action(
            argv,
            data,
            env=self._environment(),
            directory=definition.directory,
            queue_directory=self.settings.queue_directory,
            time_limit=self.time_limit,
            transport=self.transport,
        )
        return run_as(identity, action).status

    def _argv(
        self, message: Message, recipients: Sequence[RequestRecipient], definition: PipeDefinition
    ) -> list[str]:
        flags = definition.flags
        envelope = message.envelope
        client = envelope.client
        nexthop = message.request.nexthop
        message_values = {
            "sender": sender_value(message.sender or definition.null_sender, flags),
            "nexthop": nexthop.lower() if "h" in flags else nexthop,
            "size": str(message.queue_file.content_size),
            "queue_id": message.queue_id,
            "envid": envelope.envid or "",
            "client_address": client.log_client_address or "",
            "client_helo": client.log_helo_name or "",
            "client_hostname": client.log_client_name or "",
            "client_port": "" if client.log_client_port is None else str(client.log_client_port),
            "client_protocol": client.log_protocol_name or "",
            "sasl_method": client.sasl_method or "",
            "sasl_sender": envelope.attribute("sasl_sender") or "",
            "sasl_username": client.sasl_username or "",
        }
        values = [
            recipient_values(
                r.address,
                r.orig_address,
                flags,
                recipient_delimiter=self.settings.recipient_delimiter,
                owner_request_special=self.settings.owner_request_special,
                double_bounce_sender=self.settings.double_bounce_sender,
            )
            for r in recipients
        ]
        return expand_argv(definition.argv, message_values, values)

    def _environment(self) -> dict[str, str]:
        env = {"PATH": COMMAND_PATH}
        for name in self.settings.export_environment:
            if name in os.environ:
                env[name] = os.environ[name]
        return env


def command_action(
    argv: Sequence[str],
    data: bytes,
    *,
    env: dict[str, str],
    directory: str | None,
    queue_directory: str,
    time_limit: float,
    transport: str,
) -> Callable[[], Status]:
    """The action `run_as` runs in the child that has become `user=`."""

    def action() -> Status:
        try:
            os.chdir(directory or queue_directory)
        except OSError as exc:
            if directory is not None:
                return Status("4.3.0", f"cannot change to directory {directory}: {exc.strerror}")
            os.chdir("/")
        try:
            result = run_command(argv, data, env=env, cwd=None, time_limit=time_limit)
        except OSError as exc:
            return Status("4.3.0", f'cannot execute command "{argv[0]}": {exc.strerror or exc}')
        failed = command_status(result, argv[0])
        if failed is not None:
            return failed
        output = printable_output(result.output)[:SUCCESS_OUTPUT_LIMIT]
        said = f" ({output})" if output else ""
        return Status("2.0.0", f"delivered via {transport} service{said}")

    return action


def transport_time_limit(cfg: Config, transport: str, default: int) -> int:
    """`TRANSPORT_time_limit` when main.cf sets it, else DEFAULT (command_time_limit);
    ConfigError for a value that is not a time."""
    name = f"{transport}_time_limit"
    return cfg.get_time(name) if cfg.known(name) else default


def main(argv: Sequence[str] | None = None) -> int:
    try:
        transport, rest = take_service_name(argv, None)
    except ServiceNameError as exc:
        setup_logging(PROGRAM).critical("%s", exc)
        return ExitCode.USAGE

    def make_agent(ctx: PlainDaemonContext[Any]) -> Agent:
        settings: PipeSettings = ctx.settings
        limit = transport_time_limit(ctx.config, transport, settings.command_time_limit)
        delivery = PipeDelivery(transport, settings, ctx.config.config_dir, limit)
        return Agent(transport, deliver_request=delivery.deliver)

    return run_agent(PROGRAM, rest, make_agent, settings=PipeSettings, socket_name=transport)
