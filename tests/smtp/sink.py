"""A local SMTP server for tests: accepts mail and writes each message to a folder.

    python3 tests/smtp/sink.py --dir OUT [--listen 127.0.0.1:0] [--reject-prefix bounce]
        [--defer-prefix later] [--auth USER:PASSWORD] [--tls-cert CERT --tls-key KEY]
        [--implicit-tls] [--discard] [--verbose]

Prints `listening on HOST:PORT` once ready, then serves until stdin closes or it is killed.
Each accepted message is written as OUT/NNNNNN.eml (the bytes received) beside
OUT/NNNNNN.json (`{"mail_from": …, "rcpt_tos": [...]}`), each file renamed into place whole.
Recipients whose local part starts with a reject prefix get `550 5.1.1`, a defer prefix
`451 4.3.0`. `--discard` only counts (for throughput runs). `--tls-cert` offers STARTTLS, or
TLS from the first byte with `--implicit-tls`; `--auth` requires AUTH PLAIN/LOGIN.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, folder, reject_prefixes, defer_prefixes, discard):
        self.folder = folder
        self.reject_prefixes = reject_prefixes
        self.defer_prefixes = defer_prefixes
        self.discard = discard
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if any(local.startswith(prefix) for prefix in self.reject_prefixes):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if any(local.startswith(prefix) for prefix in self.defer_prefixes):
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        number = next(self.counter)
        if not self.discard:
            stem = os.path.join(self.folder, "%06d" % number)
            write_whole(stem + ".json", json.dumps(
                {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}).encode())
            write_whole(stem + ".eml", envelope.original_content or envelope.content)
        return "250 2.0.0 OK queued as %06d" % number


def write_whole(path, data):
    temporary = path + ".tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False)

    return authenticate


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--reject-prefix", action="append", default=[])
    parser.add_argument("--defer-prefix", action="append", default=[])
    parser.add_argument("--auth")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--discard", action="store_true")
    parser.add_argument("--verbose", action="store_true",
                        help="show aiosmtpd's warnings and session errors")
    args = parser.parse_args()
    if not args.verbose:
        # Tests provoke failed handshakes and logins on purpose; keep their output clean.
        warnings.simplefilter("ignore")
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)

    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir, args.reject_prefix, args.defer_prefix, args.discard)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)

    options = {"data_size_limit": 10 * 1024 * 1024, "enable_SMTPUTF8": True}
    if args.auth:
        options.update(authenticator=authenticator_for(args.auth), auth_required=True,
                       auth_require_tls=bool(context))
    if context and not args.implicit_tls:
        options.update(tls_context=context, require_starttls=True)

    host, _, port = args.listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test", **options),
        host=host, port=int(port),
        ssl=context if args.implicit_tls else None)
    bound = server.sockets[0].getsockname()
    print("listening on %s:%d" % (bound[0], bound[1]), flush=True)

    # Serve until stdin closes (the test process ended) or a signal.
    stdin_closed = loop.create_future()

    def watch_stdin():
        if not sys.stdin.buffer.read1(1024) and not stdin_closed.done():
            stdin_closed.set_result(None)

    try:
        loop.add_reader(sys.stdin.fileno(), watch_stdin)
    except (OSError, ValueError, NotImplementedError):
        pass
    async with server:
        await stdin_closed


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
