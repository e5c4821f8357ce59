#!/usr/bin/env python3
"""Local stand-ins for Slack and an SMTP relay, for scripts/e2e-alerts.sh (stdlib only).

  e2e_sinks.py serve --out DIR [--hook-port N] [--smtp-port N]
      An HTTP server that stores every POST body (Slack webhook payloads) with its path as one
      JSON line in DIR/webhook.jsonl, and a minimal SMTP server (no TLS, no AUTH) that stores
      every message, decoded (subject + text of every MIME part), as one JSON line in
      DIR/mail.jsonl. POSTs to /fail/... are a receiver that is gone: they are answered 404 (a
      deleted webhook; Alertmanager does not retry a 4xx) and stored in DIR/failed.jsonl.
      Port 0 = any free port; the ports in use are written to DIR/ports.json.

  e2e_sinks.py check --out DIR --alert NAME[|NAME...][=/PATH] [--alert ...] [--needle TEXT ...]
      Exit 0 when, for every --alert (alternatives separated by |), some webhook payload (posted
      to PATH, when given) AND some mail mention the alert name and every needle; else print what
      is missing and exit 1. Webhook payloads are searched as decoded JSON strings.

  e2e_sinks.py attempted --out DIR --alert NAME
      Exit 0 when a POST to /fail/... (the failing receiver) mentioned NAME.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def append(path: str, obj: dict) -> None:
    with LOCK, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


class Hook(BaseHTTPRequestHandler):
    out = ""

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace")
        failing = self.path.startswith("/fail")
        append(os.path.join(self.out, "failed.jsonl" if failing else "webhook.jsonl"),
               {"path": self.path, "time": time.time(), "body": body})
        self.send_response(404 if failing else 200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"no such hook" if failing else b"ok")

    def do_GET(self):  # noqa: N802 (health)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Smtp(socketserver.StreamRequestHandler):
    out = ""

    def reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        self.reply("220 lqo-e2e-smtp ready")
        mail_from, rcpt = "", []
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            cmd = line.split(" ", 1)[0].upper()
            if cmd == "EHLO":
                self.reply("250-lqo-e2e-smtp")
                self.reply("250-8BITMIME")
                self.reply("250 SIZE 10485760")
            elif cmd == "HELO":
                self.reply("250 lqo-e2e-smtp")
            elif cmd == "MAIL":
                mail_from, rcpt = line[10:].strip(), []
                self.reply("250 OK")
            elif cmd == "RCPT":
                rcpt.append(line[8:].strip())
                self.reply("250 OK")
            elif cmd == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                chunks = []
                while True:
                    d = self.rfile.readline(1 << 20)
                    if not d or d in (b".\r\n", b".\n"):
                        break
                    if d.startswith(b".."):
                        d = d[1:]
                    chunks.append(d)
                self.store(mail_from, rcpt, b"".join(chunks))
                self.reply("250 OK: queued")
            elif cmd in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif cmd == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")

    def store(self, mail_from: str, rcpt: list[str], data: bytes) -> None:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        texts = []
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                try:
                    texts.append(part.get_content())
                except (LookupError, UnicodeError):
                    texts.append(part.get_payload(decode=True).decode("utf-8", "replace"))
        append(os.path.join(self.out, "mail.jsonl"),
               {"time": time.time(), "from": mail_from, "to": rcpt,
                "subject": str(msg.get("Subject", "")), "text": "\n".join(texts)})


class ThreadingTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(args) -> int:
    os.makedirs(args.out, exist_ok=True)
    Hook.out = Smtp.out = args.out
    hook = ThreadingHTTPServer(("127.0.0.1", args.hook_port), Hook)
    smtp = ThreadingTCP(("127.0.0.1", args.smtp_port), Smtp)
    ports = {"hook": hook.server_address[1], "smtp": smtp.server_address[1]}
    tmp = os.path.join(args.out, "ports.json.tmp")
    with open(tmp, "w") as f:
        json.dump(ports, f)
    os.replace(tmp, os.path.join(args.out, "ports.json"))
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    print(f"e2e_sinks: webhook on 127.0.0.1:{ports['hook']}, smtp on 127.0.0.1:{ports['smtp']}",
          flush=True)
    try:
        hook.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


def strings(body: str) -> str:
    """Every string of a JSON payload, decoded (Go escapes <, >, & in JSON), one per line."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    out: list[str] = []

    def walk(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(value)
    return "\n".join(out)


def check(args) -> int:
    hooks = [(h["path"], strings(h["body"])) for h in load(os.path.join(args.out, "webhook.jsonl"))]
    mails = [m["subject"] + "\n" + m["text"] for m in load(os.path.join(args.out, "mail.jsonl"))]
    needles = args.needle or [""]
    missing = []
    for spec in args.alert:
        alt, _, path = spec.partition("=")
        names = alt.split("|")

        def hit(text):
            return any(n in text for n in names) and all(x in text for x in needles)

        if not any(hit(t) and (not path or p == path) for p, t in hooks):
            missing.append(f"webhook{' ' + path if path else ''}: {alt} with {needles!r}")
        if not any(hit(t) for t in mails):
            missing.append(f"mail: {alt} with {needles!r}")
    if missing:
        if args.verbose:
            print(f"e2e_sinks: {len(hooks)} webhook payload(s), {len(mails)} mail(s); "
                  f"missing: {'; '.join(missing)}")
        return 1
    print(f"e2e_sinks: every alert reached the webhook and the mailbox "
          f"({len(hooks)} payloads, {len(mails)} mails): {', '.join(args.alert)}")
    return 0


def attempted(args) -> int:
    failed = load(os.path.join(args.out, "failed.jsonl"))
    if any(args.alert in strings(f["body"]) for f in failed):
        print(f"e2e_sinks: {args.alert} was sent to the failing receiver "
              f"({len(failed)} failed deliveries)")
        return 0
    return 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--out", required=True)
    s.add_argument("--hook-port", type=int, default=0)
    s.add_argument("--smtp-port", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("--out", required=True)
    c.add_argument("--alert", action="append", required=True)
    c.add_argument("--needle", action="append", default=[])
    c.add_argument("-v", "--verbose", action="store_true")
    a = sub.add_parser("attempted")
    a.add_argument("--out", required=True)
    a.add_argument("--alert", required=True)
    args = ap.parse_args(argv)
    return {"serve": serve, "check": check, "attempted": attempted}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
