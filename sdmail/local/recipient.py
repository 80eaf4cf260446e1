"""One local recipient, in Postfix's order: loop check, aliases, ~/.forward, mailbox.

For `user+ext@domain` (the resolver said the domain is local; the local part is folded to
lower case for every decision):

1. A `Delivered-To:` header equal to the recipient bounces it: `5.4.6 mail forwarding loop
   for ADDRESS`.
2. alias_maps are searched for `user+ext`, then `user` (core/tables/addr_find). The value's
   targets are expanded with the rights of the alias database's owner, or default_privs
   when root owns it. When `owner-NAME` is an alias too, forwarded mail gets
   `owner-NAME@$myorigin` as its envelope sender (or the owner alias's value with
   expand_owner_alias), so errors go to the list owner.
3. Otherwise the user must exist in the password database, or the recipient bounces with
   `5.1.1 unknown user: "user"` (postmaster and MAILER-DAEMON are discarded with a warning,
   as Postfix's `required alias not found`). The first forward_path file that exists is
   read as the user and its targets expanded with the user's rights; an empty one means
   no forwarding. A .forward that is not a regular file, is owned by someone else than
   the user or root, or is writable by others is ignored with a warning.
4. The mailbox: mailbox_command, else `$home/$home_mailbox` (a Maildir when it ends in
   `/`), else `$mail_spool_directory/user` (mbox), written as the user.

Targets: addresses are collected and forwarded as one new message (local/forward);
naming the recipient itself (`user`, `\\user`, `user@samedomain`) means its own mailbox;
`|command` and `/file` are allowed where allow_mail_to_commands / allow_mail_to_files say
(alias, forward, include), and never run as root (default_privs instead); `:include:/file`
is read with the current rights, and its targets get its owner's rights unless root owns
it. Duplicate targets within one expansion are delivered once.

Every user-side action runs in a child made by `agent.run_as`; this module only decides.

Failure modes: `LocalDelivery.deliver` raises TempFail / PermFail for a failure of the
whole recipient; per-target failures come back as outcomes. A table that cannot be read
defers (`alias database unavailable`).
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from sdmail.agent import ChildResult, Identity, Message, Outcome, run_as
from sdmail.core.address import AddressError, quote_address, split_address, split_extension
from sdmail.core.deliver_request import RequestRecipient
from sdmail.core.dsn import DeliveryFailure, PermFail, Status, TempFail
from sdmail.core.log import msg_warning
from sdmail.core.mailstore import LockPolicy
from sdmail.core.pipe_command import filter_value
from sdmail.core.records import Notify
from sdmail.core.tables import TableError, open_table, split_spec
from sdmail.core.tables.addr_find import Found, LookupSettings, find_alias
from sdmail.core.tables.aliases import AliasError, AliasTarget, TargetKind, split_alias_value
from sdmail.core.tables.hash import db_path
from sdmail.core.tables.table import Table
from sdmail.local import destinations
from sdmail.local.destinations import Copy
from sdmail.local.dotforward import expand_macros, parse_targets, parse_user_file, read_user_file
from sdmail.local.forward import Forwarding, forward
from sdmail.local.settings import LocalSettings

NESTING_LIMIT: Final = 100
COMMAND_PATH: Final = "/usr/bin:/bin"  # Postfix's _PATH_DEFPATH for delivery commands
DEFAULT_SHELL: Final = "/bin/sh"
_REQUIRED_ALIASES: Final = ("postmaster", "mailer-daemon")
_FILE_TABLE_TYPES: Final[dict[str, Callable[[str], str]]] = {
    "hash": lambda name: str(db_path(name)),
    "texthash": str,
}

# Where a target came from: the classes of allow_mail_to_commands / allow_mail_to_files.
ALIAS, FORWARD, INCLUDE = "alias", "forward", "include"


@dataclass
class _Recipient:
    """What is known about the recipient being delivered, and what was delivered for it."""

    message: Message
    address: str  # as requested
    original: str | None
    local: str  # folded local part, extension included
    user: str  # folded, extension removed
    extension: str  # without its delimiter
    delimiter: str
    domain: str
    sender: str  # of forwarded mail
    notify: int
    orcpt: str | None
    seen: set[tuple[str, str]] = field(default_factory=set)


class LocalDelivery:
    """Delivers to local recipients with one configuration; one per worker process."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self._tables: list[Table] | None = None
        self._lookup = LookupSettings(
            recipient_delimiter=settings.recipient_delimiter,
            owner_request_special=settings.owner_request_special,
            double_bounce_sender=settings.double_bounce_sender,
            propagate_unmatched_extensions=settings.propagate_unmatched_extensions,
        )
        self._lock = LockPolicy.from_styles(
            settings.mailbox_delivery_lock,
            settings.deliver_lock_attempts,
            settings.deliver_lock_delay,
            settings.stale_lock_time,
        )
        self._forwarding = Forwarding(
            socket_directory=settings.socket_directory,
            myhostname=settings.myhostname,
            mail_name=settings.mail_name,
            timeout=settings.ipc_timeout,
            add_delivered_to=FORWARD in self._delivered_classes(),
        )

    def close(self) -> None:
        for table in self._tables or ():
            table.close()
        self._tables = None

    # -- the order of things ------------------------------------------------------------
    def deliver(self, message: Message, requested: RequestRecipient) -> list[Outcome]:
        """Deliver MESSAGE to REQUESTED; the outcomes to log."""
        rcpt = self._recipient(message, requested)
        if delivered_to_already(message.header_block(), rcpt.address):
            raise PermFail(Status("5.4.6", f"mail forwarding loop for {rcpt.address}"))
        if not rcpt.user:
            raise PermFail(Status("5.1.3", "null username"))
        found = self._find_alias(rcpt)
        if found is not None:
            return self._expand_alias(rcpt, found)
        return self._as_user(rcpt)

    def _recipient(self, message: Message, requested: RequestRecipient) -> _Recipient:
        address = requested.address
        local, domain = split_address(address)
        folded = local.lower()
        user, extension = split_extension(
            folded,
            self.settings.recipient_delimiter,
            owner_request_special=self.settings.owner_request_special,
            double_bounce_sender=self.settings.double_bounce_sender,
        )
        return _Recipient(
            message=message,
            address=address,
            original=requested.orig_address,
            local=folded,
            user=user,
            extension=extension[1:],
            delimiter=extension[:1],
            domain=domain,
            sender=message.sender,
            notify=requested.notify,
            orcpt=requested.orcpt,
        )

    def _as_user(self, rcpt: _Recipient) -> list[Outcome]:
        try:
            account = pwd.getpwnam(rcpt.user)
        except KeyError:
            return [self._unknown(rcpt)]
        identity = Identity.from_passwd(account)
        forwarded = self._dotforward(rcpt, identity)
        if forwarded is not None:
            return forwarded
        return [self._mailbox(rcpt, identity)]

    def _unknown(self, rcpt: _Recipient) -> Outcome:
        if rcpt.user in _REQUIRED_ALIASES:
            msg_warning(rcpt.message.queue_id, f"required alias not found: {rcpt.user}")
            return Outcome(Status("2.0.0", "discarded"))
        raise PermFail(Status("5.1.1", f'unknown user: "{rcpt.user}"'))

    # -- aliases --------------------------------------------------------------------------
    def _alias_tables(self) -> list[Table]:
        if self._tables is None:
            self._tables = [open_table(spec) for spec in self.settings.alias_maps]
        return self._tables

    def _search(self, queue_id: str, key: str) -> Found | None:
        try:
            return find_alias(self._alias_tables(), key, self._lookup)
        except TableError as exc:
            msg_warning(queue_id, f"alias_maps lookup of {key}: {exc}")
            raise TempFail(Status("4.3.0", "alias database unavailable")) from None

    def _find_alias(self, rcpt: _Recipient) -> Found | None:
        return self._search(rcpt.message.queue_id, rcpt.local)

    def _expand_alias(self, rcpt: _Recipient, found: Found) -> list[Outcome]:
        try:
            targets = split_alias_value(found.value)
        except AliasError as exc:
            msg_warning(rcpt.message.queue_id, f"alias {found.key} in {found.table}: {exc}")
            raise TempFail(Status("4.3.0", "alias database unavailable")) from None
        owner = self._search(rcpt.message.queue_id, f"owner-{found.key}")
        if owner is not None:
            rcpt.sender = self._owner_sender(found.key, owner)
        identity = self._alias_identity(found.table)
        return self._expand(rcpt, targets, ALIAS, identity, alias_name=found.key)

    def _owner_sender(self, name: str, owner: Found) -> str:
        if self.settings.expand_owner_alias:
            try:
                listed = split_alias_value(owner.value)
            except AliasError:
                listed = []
            if len(listed) == 1 and listed[0].kind is TargetKind.ADDRESS:
                return listed[0].text
        return f"owner-{name}@{self.settings.myorigin}"

    def _alias_identity(self, table_spec: str) -> Identity:
        """The alias database's owner when that is not root (Postfix's rule), else
        default_privs."""
        path = _table_file(table_spec)
        if path is not None:
            try:
                owner = os.stat(path).st_uid
                if owner != 0:
                    return Identity.from_passwd(pwd.getpwuid(owner))
            except (OSError, KeyError):
                pass
        return self._default_privs()

    def _default_privs(self) -> Identity:
        name = self.settings.default_privs
        try:
            identity = Identity.named(name)
        except KeyError:
            raise TempFail(Status("4.3.0", f"default_privs user {name} is unknown")) from None
        if identity.uid == 0:
            raise TempFail(Status("4.3.0", "default_privs must not be a privileged user"))
        return identity

    # -- .forward -------------------------------------------------------------------------
    def _dotforward(self, rcpt: _Recipient, identity: Identity) -> list[Outcome] | None:
        values = self._macro_values(rcpt, identity)
        for template in self.settings.forward_path:
            path = expand_macros(template, values, strict=True)
            if not path:
                continue
            found = parse_user_file(_checked_read(run_as(identity, _reader(path))))
            if found is None:
                continue
            problem = _forward_file_problem(found.owner, found.mode, identity.uid, found.regular)
            if problem is not None:
                msg_warning(rcpt.message.queue_id, f"{path}: {problem}; ignoring it")
                continue
            targets, problems = parse_targets(found.text)
            for text in problems:
                msg_warning(rcpt.message.queue_id, f"{path}: {text}")
            if not targets:
                return None
            return self._expand(rcpt, targets, FORWARD, identity, alias_name=None)
        return None

    # -- targets --------------------------------------------------------------------------
    def _expand(
        self,
        rcpt: _Recipient,
        targets: Iterable[AliasTarget],
        origin: str,
        identity: Identity,
        *,
        alias_name: str | None,
        level: int = 0,
    ) -> list[Outcome]:
        if level > NESTING_LIMIT:
            raise PermFail(Status("5.4.6", "recipient nesting limit exceeded"))
        outcomes: list[Outcome] = []
        addresses: list[str] = []
        for target in targets:
            if (target.kind.value, target.text) in rcpt.seen:
                continue
            rcpt.seen.add((target.kind.value, target.text))
            try:
                if target.kind is TargetKind.ADDRESS:
                    # `\\user` names the user's own mailbox, past aliases and .forward.
                    direct = target.text.startswith("\\")
                    address = target.text.removeprefix("\\")
                    if self._names_recipient(rcpt, address, origin, alias_name):
                        outcomes.extend(self._to_self(rcpt, origin, direct))
                    else:
                        addresses.append(address)
                elif target.kind is TargetKind.INCLUDE:
                    outcomes.extend(self._include(rcpt, target.text, origin, identity, level))
                elif target.kind is TargetKind.COMMAND:
                    outcomes.append(self._command(rcpt, target.text, origin, identity))
                else:
                    outcomes.append(self._file(rcpt, target.text, origin, identity))
            except DeliveryFailure as exc:
                # One target's failure; what the others did must still be logged.
                outcomes.append(Outcome(exc.status))
        if addresses:
            outcomes.append(self._forward(rcpt, addresses))
        return outcomes

    def _names_recipient(
        self, rcpt: _Recipient, text: str, origin: str, alias_name: str | None
    ) -> bool:
        """True when TEXT names the recipient itself: its own mailbox, not a forward."""
        local, domain = split_address(text)
        if "@" in text and domain.lower() != rcpt.domain.lower():
            return False
        names = {rcpt.local, rcpt.user} if origin != ALIAS else {alias_name or rcpt.local}
        return local.lower() in names

    def _to_self(self, rcpt: _Recipient, origin: str, direct: bool) -> list[Outcome]:
        if origin == ALIAS and not direct:
            return self._as_user(rcpt)  # no second alias lookup for the same name
        try:
            identity = Identity.from_passwd(pwd.getpwnam(rcpt.user))
        except KeyError:
            return [self._unknown(rcpt)]
        return [self._mailbox(rcpt, identity)]

    def _include(
        self, rcpt: _Recipient, path: str, origin: str, identity: Identity, level: int
    ) -> list[Outcome]:
        if not os.path.isabs(path):
            raise PermFail(Status("5.3.5", f":include: file name is not absolute: {path}"))
        found = parse_user_file(_checked_read(run_as(identity, _reader(path))))
        if found is None:
            raise TempFail(Status("4.3.0", f"cannot open include file {path}: No such file"))
        if not found.regular:
            raise PermFail(Status("5.3.5", f"include file {path} is not a regular file"))
        targets, problems = parse_targets(found.text)
        for text in problems:
            msg_warning(rcpt.message.queue_id, f"{path}: {text}")
        if found.owner not in (0, identity.uid):
            try:
                identity = Identity.from_passwd(pwd.getpwuid(found.owner))
            except KeyError:
                identity = self._default_privs()
        return self._expand(rcpt, targets, INCLUDE, identity, alias_name=None, level=level + 1)

    def _forward(self, rcpt: _Recipient, addresses: list[str]) -> Outcome:
        envelope = rcpt.message.envelope
        status = forward(
            self._forwarding,
            queue_id=rcpt.message.queue_id,
            envelope=envelope,
            sender=rcpt.sender,
            addresses=addresses,
            notify=_without_success(rcpt.notify),
            orcpt=rcpt.orcpt,
            delivered_to=_shown(rcpt.address),
            content=rcpt.message.content(),
            trace_flags=rcpt.message.request.trace_flags,
        )
        if rcpt.message.verifying and status.is_success:
            # The copy carries the flags on, and its own report says where it goes.
            status = Status(status.dsn, f"forwarded to {', '.join(addresses)}")
        return Outcome(status, expanded=status.is_success)

    def _command(self, rcpt: _Recipient, command: str, origin: str, identity: Identity) -> Outcome:
        if origin not in self.settings.allow_mail_to_commands:
            return Outcome(Status("5.7.1", "mail to command is restricted"))
        if rcpt.message.verifying:
            return Outcome(Status("2.0.0", f"delivers to command: {command}"))
        runner = self._unprivileged(identity)
        shell = self.settings.local_command_shell or DEFAULT_SHELL
        action = destinations.command_action(
            [shell, "-c", command],
            self._copy(rcpt, runner),
            env=self._command_environment(rcpt, runner),
            home=runner.home,
            time_limit=self.settings.command_time_limit,
            label=command,
        )
        return Outcome(run_as(runner, action).status)

    def _file(self, rcpt: _Recipient, path: str, origin: str, identity: Identity) -> Outcome:
        if origin not in self.settings.allow_mail_to_files:
            return Outcome(Status("5.7.1", "mail to file is restricted"))
        if rcpt.message.verifying:
            return Outcome(Status("2.0.0", f"delivers to file: {path}"))
        writer = self._unprivileged(identity)
        copy = self._copy(rcpt, writer)
        if path.endswith("/"):
            action = destinations.maildir_action(path, copy)
        else:
            action = destinations.mbox_action(
                path,
                copy,
                self._lock,
                size_limit=self.settings.mailbox_size_limit,
                lead=f"cannot append message to file {path}: ",
                success=f"delivered to file: {path}",
            )
        return Outcome(run_as(writer, action).status)

    def _unprivileged(self, identity: Identity) -> Identity:
        """Commands and files never run as root: default_privs does instead."""
        return self._default_privs() if identity.uid == 0 else identity

    # -- the mailbox ----------------------------------------------------------------------
    def _mailbox(self, rcpt: _Recipient, identity: Identity) -> Outcome:
        settings = self.settings
        if rcpt.message.verifying:
            return Outcome(Status("2.0.0", self._mailbox_kind()))
        if settings.mailbox_command:
            runner = self._unprivileged(identity)
            action = destinations.command_action(
                [settings.local_command_shell or DEFAULT_SHELL, "-c", settings.mailbox_command],
                self._copy(rcpt, runner),
                env=self._command_environment(rcpt, runner),
                home=runner.home,
                time_limit=settings.command_time_limit,
                label=settings.mailbox_command,
            )
            return Outcome(run_as(runner, action).status)
        copy = self._copy(rcpt, identity)
        if settings.home_mailbox:
            path = os.path.join(identity.home, settings.home_mailbox)
        else:
            path = os.path.join(settings.mail_spool_directory, rcpt.user)
            if settings.mail_spool_directory.endswith("/"):
                path += "/"
            identity = replace(identity, extra_groups=_spool_group(settings.mail_spool_directory))
        if path.endswith("/"):
            return Outcome(run_as(identity, destinations.maildir_action(path, copy)).status)
        action = destinations.mbox_action(
            path,
            copy,
            self._lock,
            size_limit=settings.mailbox_size_limit,
            lead=f"cannot update mailbox {path} for user {rcpt.user}. ",
            success="delivered to mailbox",
        )
        return Outcome(run_as(identity, action).status)

    def _mailbox_kind(self) -> str:
        """What a `sendmail -bv` report says of the mailbox delivery (Postfix's texts)."""
        settings = self.settings
        if settings.mailbox_command:
            return f"delivers to command: {settings.mailbox_command}"
        where = settings.home_mailbox or settings.mail_spool_directory
        return "delivers to maildir" if where.endswith("/") else "delivers to mailbox"

    # -- what destinations get ------------------------------------------------------------
    def _delivered_classes(self) -> set[str]:
        text = self.settings.prepend_delivered_header.replace(",", " ")
        return set(text.split())

    def _copy(self, rcpt: _Recipient, identity: Identity) -> Copy:
        classes = self._delivered_classes()
        sender = _shown(rcpt.message.sender)
        original = _shown(rcpt.original or rcpt.address)
        delivered = _shown(rcpt.address)
        with_original = self.settings.enable_original_recipient
        return Copy(
            sender=rcpt.message.sender,
            file_headers=destinations.prepended_headers(
                sender, original, delivered if "file" in classes else None, with_original
            ),
            command_headers=destinations.prepended_headers(
                sender, original, delivered if "command" in classes else None, with_original
            ),
            content=rcpt.message.content(),
            when=time.time(),
        )

    def _macro_values(self, rcpt: _Recipient, identity: Identity) -> dict[str, str]:
        allowed = self.settings.command_expansion_filter
        raw = {
            "user": rcpt.user,
            "home": identity.home,
            "shell": identity.shell,
            "recipient_delimiter": rcpt.delimiter or self.settings.recipient_delimiter[:1],
            "extension": rcpt.extension,
            "domain": rcpt.domain,
            "local": rcpt.local,
            "mailbox": rcpt.local,
            "recipient": rcpt.address,
        }
        kept_whole = {"home", "shell"}  # from the password database, not from the sender
        return {k: v if k in kept_whole else filter_value(v, allowed) for k, v in raw.items()}

    def _command_environment(self, rcpt: _Recipient, runner: Identity) -> dict[str, str]:
        envelope = rcpt.message.envelope
        values = {
            "HOME": runner.home,
            "SHELL": runner.shell,
            "LOGNAME": runner.name,
            "USER": rcpt.user,
            "EXTENSION": rcpt.extension,
            "DOMAIN": rcpt.domain,
            "LOCAL": rcpt.local,
            "RECIPIENT": rcpt.address,
            "ORIGINAL_RECIPIENT": rcpt.original or rcpt.address,
            "SENDER": rcpt.message.sender,
        }
        if envelope.envid:
            values["ENVID"] = envelope.envid
        client = envelope.client
        for name, value in (
            ("CLIENT_ADDRESS", client.log_client_address),
            ("CLIENT_HELO", client.log_helo_name),
            ("CLIENT_HOSTNAME", client.log_client_name),
            ("CLIENT_PROTOCOL", client.log_protocol_name),
            ("SASL_METHOD", client.sasl_method),
            ("SASL_USERNAME", client.sasl_username),
        ):
            if value:
                values[name] = value
        allowed = self.settings.command_expansion_filter
        env = {"PATH": COMMAND_PATH}
        for name in self.settings.export_environment:
            if name in os.environ:
                env[name] = os.environ[name]
        env.update({k: filter_value(v, allowed) for k, v in values.items()})
        env["HOME"], env["SHELL"] = runner.home, runner.shell
        return env


# --------------------------------------------------------------------------------------
def _without_success(notify: int) -> int:
    """The NOTIFY the copies of an expanded alias get (RFC 3461 "expanded"): the success
    notice is the alias's, not theirs; SUCCESS alone becomes NEVER, as in Postfix."""
    if notify == Notify.SUCCESS.value:
        return Notify.NEVER.value
    return notify & ~Notify.SUCCESS.value


def delivered_to_already(header_block: bytes, address: str) -> bool:
    """True when a Delivered-To: header in HEADER_BLOCK names ADDRESS (ignoring case);
    folded headers are unfolded, any bytes are accepted."""
    wanted = address.casefold()
    return any(
        value.casefold() == wanted for value in _header_values(header_block, b"delivered-to")
    )


def _header_values(header_block: bytes, name: bytes) -> list[str]:
    values: list[str] = []
    current: bytes | None = None
    for line in header_block.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += b" " + line.strip()
            continue
        if current is not None:
            values.append(current.strip().decode("utf-8", "surrogateescape"))
        field_name, colon, value = line.partition(b":")
        current = value if colon and field_name.strip().lower() == name else None
    if current is not None:
        values.append(current.strip().decode("utf-8", "surrogateescape"))
    return [value.strip("<>") for value in values]


def _table_file(spec: str) -> str | None:
    """The file whose owner speaks for the table SPEC, if it has one."""
    try:
        table_type, name = split_spec(spec)
    except TableError:
        return None
    path_of = _FILE_TABLE_TYPES.get(table_type)
    return path_of(name) if path_of is not None else None


def _forward_file_problem(owner: int, mode: int, uid: int, regular: bool) -> str | None:
    if not regular:
        return "not a regular file"
    if owner not in (0, uid):
        return f"owned by uid {owner}, not by the user or root"
    if mode & stat.S_IWOTH:
        return "writable by everyone"
    return None


def _spool_group(spool: str) -> tuple[int, ...]:
    """The spool directory's group when only that group may create mailboxes there (Debian's
    /var/mail, root:mail 2775): the user's child needs it to create the mailbox and its
    dot-lock, as Debian's setgid-mail tools have it."""
    try:
        st = os.stat(spool)
    except OSError:
        return ()
    if st.st_mode & stat.S_IWGRP and not st.st_mode & stat.S_IWOTH:
        return (st.st_gid,)
    return ()


def _reader(path: str) -> Callable[[], ChildResult]:
    return lambda: read_user_file(path)


def _checked_read(result: ChildResult) -> ChildResult:
    if not result.status.is_success:
        raise TempFail(result.status) if result.status.is_temporary else PermFail(result.status)
    return result


def _shown(address: str) -> str:
    try:
        return quote_address(address)
    except AddressError:
        return address
