#!/usr/bin/env python3
"""A TLS client for the tests: Python's ssl module (OpenSSL underneath, but not netserver's code).

    tls_client.py [options] [LINE ...]

Connects to 127.0.0.1:PORT (or --unix PATH), completes the handshake, reads --read lines, sends
each LINE with CRLF and reads one reply line per LINE, then prints one JSON object: the
negotiated version, cipher, ALPN, the server certificate's serial, the lines read, and "error"
when something failed. --resume connects twice and reports whether the second reused the session; each LINE is sent
over the second.
--until-close sends every LINE in one write, then reads until the server ends the stream and
reports how ("closed": "close_notify", or "without close_notify" for a bare EOF). With --fin the
last LINE goes without its CRLF and the client then ends its side with a bare TCP FIN
(shutdown(SHUT_WR), no close_notify) before reading.
--stream N sends N lines of up to --size bytes, each its own TLS record, without waiting for the
replies, and reads nothing for --pause seconds (the server's output backs up meanwhile); then it
reads every reply and reports how many came back intact ("intact") and in what order ("in_order").
"""
import argparse
import json
import select
import socket
import ssl
import sys
import time

VERSIONS = {"1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    if args.tls:
        if args.tls == "1.1":
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client side must allow it to offer it at all
        ctx.minimum_version = ctx.maximum_version = VERSIONS[args.tls]
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    return ctx


def connect(args, ctx, session=None):
    if args.unix:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(args.timeout)
        raw.connect(args.unix)
    else:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(args.timeout)
        if args.rcvbuf:  # before connect(): the window is agreed in the handshake
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        raw.connect(("127.0.0.1", args.port))
    return ctx.wrap_socket(raw, server_hostname=args.sni, session=session,
                           suppress_ragged_eofs=not args.until_close)


def read_line(conn, pending):
    while b"\r\n" not in pending[0]:
        data = conn.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        pending[0] += data
    line, _, rest = pending[0].partition(b"\r\n")
    pending[0] = rest
    return line.decode("utf-8", "replace")


def talk(args, out):
    ctx = context(args)
    conn = connect(args, ctx)
    out["version"] = conn.version()
    out["cipher"] = conn.cipher()[0]
    out["alpn"] = conn.selected_alpn_protocol()
    out["serial"] = conn.getpeercert().get("serialNumber")  # verified: the dict form is filled
    pending = [b""]
    out["lines"] = [read_line(conn, pending) for _ in range(args.read)]
    for line in args.lines:
        conn.sendall(line.encode() + b"\r\n")
        out["lines"].append(read_line(conn, pending))
    if not args.drop:  # Python's close() alone sends no close_notify: --drop ends with a bare FIN
        conn.unwrap()
    conn.close()


def until_close(args, out):
    ctx = context(args)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python sets it: a bare EOF would pass for close_notify
    conn = connect(args, ctx)
    pending = [b""]
    out["lines"] = [read_line(conn, pending)]  # the banner
    data = b"".join(line.encode() + b"\r\n" for line in args.lines)
    if args.fin:
        conn.sendall(data[:-2])
        socket.socket.shutdown(conn, socket.SHUT_WR)  # the TCP socket's own: SSLSocket's drops the TLS state
    else:
        conn.sendall(data)
    received = pending[0]
    try:
        while chunk := conn.recv(65536):
            received += chunk
        out["closed"] = "close_notify"
    except ssl.SSLEOFError:
        out["closed"] = "without close_notify"
    out["lines"] += received.decode("utf-8", "replace").split("\r\n")[:-1]
    conn.close()


def stream_line(i, size):
    """Line i: its number, then bytes that depend on i, 1 to `size` bytes long in all."""
    length = 1 + (i * 7919) % size
    body = "".join(chr(33 + (i + k) % 94) for k in range(min(length, 94)))
    return (f"{i}:" + body * (length // len(body) + 1))[:max(length, len(str(i)) + 1)].encode()


def stream(args, out):
    conn = connect(args, context(args))
    pending = [b""]
    read_line(conn, pending)  # the banner
    conn.setblocking(False)
    lines = [stream_line(i, args.size) for i in range(args.stream)]
    sent, offset, intact, in_order = 0, 0, 0, True
    received = pending[0]
    started = time.monotonic()
    deadline = started + args.timeout * 4
    while intact < args.stream or offset < len(received):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sent} lines sent, {intact} back intact")
        reading = time.monotonic() - started >= args.pause
        readable, writable, _ = select.select([conn] if reading else [], [conn] if sent < len(lines) else [], [], 0.05)
        if writable:
            try:
                conn.send(lines[sent] + b"\r\n")  # one record: a line is shorter than 16 KiB
                sent += 1
            except ssl.SSLWantWriteError:
                pass
        while reading:
            try:
                chunk = conn.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                raise EOFError(f"the server closed the connection after {intact} lines")
            received += chunk
        while (end := received.find(b"\r\n", offset)) >= 0:
            line = received[offset:end]
            offset = end + 2
            if intact < len(lines) and line == lines[intact]:
                intact += 1
            else:
                in_order = False
        received = received[offset:]
        offset = 0
        if not in_order:
            break
    out["intact"] = intact
    out["in_order"] = in_order
    conn.setblocking(True)
    conn.unwrap()
    conn.close()


def resume(args, out):
    ctx = context(args)
    first = connect(args, ctx)
    pending = [b""]
    read_line(first, pending)  # the banner: TLS 1.3 tickets arrive before it
    session = first.session
    first.close()
    second = connect(args, ctx, session)
    out["reused"] = second.session_reused
    pending = [b""]
    out["lines"] = [read_line(second, pending)]
    for line in args.lines:  # sent over the resumed session
        second.sendall(line.encode() + b"\r\n")
        out["lines"].append(read_line(second, pending))
    second.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--tls", choices=sorted(VERSIONS))
    parser.add_argument("--alpn")
    parser.add_argument("--sni", default="localhost")
    parser.add_argument("--read", type=int, default=1, help="lines to read before sending (the banner)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--drop", action="store_true", help="end with a bare FIN, no close_notify")
    parser.add_argument("--until-close", action="store_true", help="send every LINE, read until the end")
    parser.add_argument("--fin", action="store_true", help="with --until-close: end with a bare FIN after a partial line")
    parser.add_argument("--stream", type=int, default=0, help="lines to stream (see above)")
    parser.add_argument("--size", type=int, default=4096, help="longest streamed line")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds of not reading while streaming")
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of a TCP client (bytes)")
    parser.add_argument("--timeout", type=float, default=5)
    parser.add_argument("lines", nargs="*")
    args = parser.parse_args()
    out = {}
    try:
        mode = resume if args.resume else stream if args.stream else until_close if args.until_close else talk
        mode(args, out)
    except (OSError, EOFError, ssl.SSLError) as error:
        out["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
