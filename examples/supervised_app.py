"""A small supervised application: a TCP echo server and a worker service.

The server answers each line with the worker's upper-cased copy of it. The
line ``crash`` makes the worker crash ("let it crash"): that one client gets an
error, the supervisor restarts the worker with fresh state, and the next
request is served by the new incarnation. Nothing else is disturbed.

Run the scripted demo (starts, talks to itself over loopback, exits 0)::

    python examples/supervised_app.py

Or serve until Ctrl-C, then talk to it with ``nc 127.0.0.1 7007``::

    python examples/supervised_app.py --serve --port 7007
"""

from __future__ import annotations

import argparse
import functools
import logging

import trio

import trioscope


class Upper(trioscope.Service):
    """Upper-cases text; counts what it has done since it (re)started."""

    def __init__(self) -> None:
        self.handled = 0

    async def convert(self, line: str) -> str:
        if line == "crash":
            raise RuntimeError("asked to crash")  # an unexpected failure: let it crash
        if not line:
            raise EmptyLine("empty line")  # an expected failure: the service keeps running
        self.handled += 1
        return f"{line.upper()} (#{self.handled})"


class EmptyLine(trioscope.Rejected, ValueError):
    """A request the worker refuses; the caller gets it, the worker keeps running."""


async def handle_client(stream: trio.SocketStream) -> None:
    buffer = b""
    async with stream:
        while data := await stream.receive_some(4096):
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                try:
                    reply = await trioscope.call("upper", Upper.convert, line)
                except trioscope.ServiceCrashedError as exc:
                    reply = f"error: the worker crashed ({exc.__cause__}); it is being restarted"
                except EmptyLine as exc:
                    reply = f"rejected: {exc}"
                await stream.send_all(reply.encode() + b"\n")


def children(port: int) -> list[trioscope.ChildSpec]:
    serve = functools.partial(trio.serve_tcp, handle_client, port, host="127.0.0.1")
    return [
        Upper.child_spec(name="upper"),
        trioscope.ChildSpec("echo", serve),
    ]


async def ask(port: int, line: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode().strip()


async def demo() -> None:
    async with (
        trioscope.open_registry(namespace="demo"),
        trioscope.open_supervisor(children(0), id="app") as sup,
    ):
        listeners = sup.which_children()[1].value
        assert isinstance(listeners, list)
        port = listeners[0].socket.getsockname()[1]
        print(f"echo server listening on 127.0.0.1:{port}")
        for line in ["hello", "supervised", "", "crash", "world"]:
            print(f"  > {line!r:14} < {await ask(port, line)}")
        worker = sup.which_children()[0]
        print(f"worker {worker.id!r} is {worker.status} after {worker.restarts} restart(s)")
    print("stopped in order; bye")


class OneLineFormatter(logging.Formatter):
    def formatException(self, ei: object) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C")
    parser.add_argument("--port", type=int, default=7007, help="port for --serve")
    args = parser.parse_args()
    # One line per report: the crash reports' tracebacks are for real logs, not a demo.
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("  [%(levelname)s %(name)s] %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if args.serve:
        print(f"serving on 127.0.0.1:{args.port}; Ctrl-C stops it")
        trioscope.run(children(args.port))
    else:
        trio.run(demo)


if __name__ == "__main__":
    main()
