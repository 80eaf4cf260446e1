"""A small authoritative DNS server for tests: real UDP and TCP on loopback, dnspython wire format.

`DnsServer(records)` answers from a dict of `(name, type) -> [rdata text, ...]`, e.g.
`{("example.test", "MX"): ["10 mx1.example.test.", "20 mx2.example.test."],
("mx1.example.test", "A"): ["127.0.0.1"]}`. A name that holds some record but not the type
asked for gets NODATA; a name that holds none gets NXDOMAIN. `servfail` names answer
SERVFAIL, `silent` names get no answer at all (the client times out), and answers about
`secure` names carry the AD bit, as a validating resolver sets it. TTLs are 0, so no
resolver keeps an answer. Every query is recorded in `queries` as (name, type).

`resolv_conf(path)` writes a resolv.conf that points sdmail's resolver here
(`nameserver 127.0.0.1`, `options port:N`).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(
        self,
        records: Mapping[tuple[str, str], Iterable[str]],
        *,
        secure: Iterable[str] = (),
        servfail: Iterable[str] = (),
        silent: Iterable[str] = (),
        address: str = "127.0.0.1",
    ) -> None:
        self.records = {
            (n.lower().rstrip("."), t.upper()): list(v) for (n, t), v in records.items()
        }
        self.secure = {n.lower().rstrip(".") for n in secure}
        self.servfail = {n.lower().rstrip(".") for n in servfail}
        self.silent = {n.lower().rstrip(".") for n in silent}
        self.queries: list[tuple[str, str]] = []
        self.udp, self.tcp = _bind_pair(address, self)
        self.address, self.port = address, self.udp.server_address[1]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.udp, self.tcp)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolv_conf(self, path: Path) -> Path:
        path.write_text(
            f"nameserver {self.address}\noptions timeout:1 attempts:1 port:{self.port}\n"
        )
        return path

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        values = self.records.get((name, rdtype))
        if values:
            rrset = dns.rrset.from_text_list(question.name, 0, "IN", rdtype, values)
            response.answer.append(rrset)
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if name in self.secure:
            response.flags |= dns.flags.AD
        return response.to_wire()


def _bind_pair(address: str, owner: DnsServer) -> tuple[_UdpServer, _TcpServer]:
    """A UDP and a TCP server on one free port (a few tries: the TCP port may be taken)."""
    for _ in range(50):
        udp = _UdpServer((address, 0), _UdpHandler, owner)
        try:
            return udp, _TcpServer((address, udp.server_address[1]), _TcpHandler, owner)
        except OSError:
            udp.server_close()
    raise OSError(f"no free port pair on {address}")


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, owner: DnsServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, owner: DnsServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.owner.answer(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        header = conn.recv(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        data = b""
        while len(data) < length:
            chunk = conn.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        reply = self.server.owner.answer(data)
        if reply is not None:
            conn.sendall(struct.pack("!H", len(reply)) + reply)
