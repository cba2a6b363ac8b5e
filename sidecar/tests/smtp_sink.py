"""A real SMTP server for the notify tests (aiosmtpd), storing what it receives.

    smtp_sink.py PORT DIR [USER PASSWORD]

Each message is written to DIR/<n>.json (atomically) as soon as its DATA is received:
the envelope, the SMTP AUTH login, Message-ID, Subject, the text and HTML parts and
every image part (base64) with its Content-ID. If DIR/delay exists, the server then
waits that many seconds before it answers 250 (the tests kill the sender meanwhile).
With USER and PASSWORD, AUTH is required and checked. Prints "ready" when listening.
"""

import asyncio
import base64
import email
import email.policy
import json
import os
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Store:
    def __init__(self, directory):
        self.dir = directory
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": session.auth_data.login.decode()
            if isinstance(session.auth_data, LoginPassword)
            else None,
            "message_id": msg["Message-ID"],
            "subject": str(msg["Subject"]),
            "content_type": msg.get_content_type(),
            "text": None,
            "html": None,
            "images": [],
            "received_at": time.time(),
        }
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "text/plain" and record["text"] is None:
                record["text"] = part.get_content()
            elif ctype == "text/html" and record["html"] is None:
                record["html"] = part.get_content()
            elif ctype.startswith("image/"):
                record["images"].append(
                    {
                        "content_type": ctype,
                        "content_id": part["Content-ID"],
                        "disposition": part.get_content_disposition(),
                        "data_b64": base64.b64encode(part.get_payload(decode=True)).decode(),
                    }
                )
        self.n += 1
        path = os.path.join(self.dir, "%06d-%d.json" % (self.n, os.getpid()))
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        delay = os.path.join(self.dir, "delay")
        if os.path.exists(delay):
            with open(delay) as f:
                await asyncio.sleep(float(f.read().strip() or "0"))
        return "250 Message accepted for delivery"


def main():
    # AUTH without TLS is what a loopback test sink does; no need to warn about it.
    warnings.filterwarnings("ignore")
    port, directory = int(sys.argv[1]), sys.argv[2]
    creds = sys.argv[3:5] if len(sys.argv) >= 5 else None
    os.makedirs(directory, exist_ok=True)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            creds is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == creds[0]
            and auth_data.password.decode() == creds[1]
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    controller = Controller(
        Store(directory),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator if creds else None,
        auth_required=bool(creds),
        auth_require_tls=False,
    )
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin (or kills us)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
