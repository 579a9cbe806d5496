"""``barbican-mock``: serve the mock until SIGINT/SIGTERM; the first stdout line is its URL."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .eras import ERAS
from .faults import Faults
from .server import MockBarbican, is_loopback


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="barbican-mock", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    p.add_argument("--era", choices=ERAS, default="2026.2", help="Barbican release to mimic")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 503")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    p.add_argument("--drop-rate", type=float, default=0.0,
                   help="fraction of connections closed without an answer")
    p.add_argument("--consumers-fail", type=int, default=None, metavar="STATUS",
                   help="answer every consumer POST/DELETE with this status")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault sequence")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (this project keeps traffic on loopback)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        print(f"barbican-mock: refusing non-loopback host {args.host!r} "
              "(use --allow-remote)", file=sys.stderr)
        return 2
    faults = Faults(error_rate=args.error_rate, latency=args.latency, drop_rate=args.drop_rate,
                    consumers_fail=args.consumers_fail, seed=args.seed)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    mock = MockBarbican(era=args.era, host=args.host, port=args.port, faults=faults,
                        allow_remote=args.allow_remote).start()
    try:
        print(mock.url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
