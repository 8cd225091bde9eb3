"""`mbserver [IP:PORT] [-s PATH] [options]` (or `python -m mbserver`): parse the command line, then serve.

`main` is also the installed `mbserver` command's entry point, whose wrapper
calls `sys.exit(main())` just as the last line here does.

Exit status: 0 after a graceful stop, 1 if the address or unix socket
cannot be listened on, 2 for a usage error.
"""

from __future__ import annotations

import logging
import sys

from .config import parse_args
from .server import Server, log_level


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    # Events (listening, signals, protocol and authentication errors) by
    # default; -v adds a line per connection.
    logging.basicConfig(
        stream=sys.stdout,
        level=log_level(settings.verbosity),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = Server(settings)
    server.handle_signals()
    try:
        server.start()
    except OSError as error:
        reason = error.strerror or str(error)
        print(f"mbserver: cannot listen on {server.binding}: {reason}", file=sys.stderr)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
