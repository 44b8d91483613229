"""A stand-in HTTP service for tests: `python -m tests.support.responder HOST PORT BODY` answers every
GET with 200 and BODY (JSON), e.g. an app replica whose /ready passes, or a cloud metadata
service. Run on a peer host (tests.netns.run_on)."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    host, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
