#!/usr/bin/env python3
"""A real SMTP server for shop's tests (aiosmtpd, from PyPI), which refuses on request.

    python3 tests/smtp/smtp_server.py --port 2525 --out received.jsonl

Every message accepted is appended to --out as one JSON line: {"mail_from", "rcpt_tos",
"data"} (data is the message as received, headers and MIME parts included), flushed at once.
Recipients choose how they are answered, by the start of their address:

- `refuse-…`     550 5.1.1 at RCPT (a permanent refusal);
- `tempfail<N>-…` 451 4.3.0 at RCPT for the first N attempts for that address, then accepted;
- anyone else    accepted.

It prints "listening on <port>" once it accepts connections, and stops on SIGTERM.
"""
import argparse
import asyncio
import json
import re
import signal

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out):
        self.out = out
        self.tempfails = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("refuse-"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        m = re.match(r"tempfail(\d+)-", local)
        if m:
            seen = self.tempfails.get(address, 0)
            if seen < int(m.group(1)):
                self.tempfails[address] = seen + 1
                return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.content.decode("utf-8", errors="replace")
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "data": data}) + "\n")
            f.flush()
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    controller = Controller(Handler(args.out), hostname="127.0.0.1", port=args.port)
    controller.start()
    print("listening on %d" % args.port, flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
