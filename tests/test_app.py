"""`trioscope.serve` and `trioscope.run`: an application that stops in order on a signal."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio
from _guards import no_stray_cancel
from trio.testing import wait_all_tasks_blocked

import trioscope
from trioscope import ChildSpec, Restart

pytestmark = pytest.mark.trioscope_scope


class Recorded:
    """A plain child that records its start (with the registry it sees) and its stop."""

    def __init__(self, events: list[str], name: str) -> None:
        self.events = events
        self.name = name

    def spec(self, **options: object) -> ChildSpec:
        return ChildSpec(self.name, self, **options)  # type: ignore[arg-type]

    async def __call__(self, *, task_status: trio.TaskStatus[None]) -> None:
        namespace = trioscope.current_registry().namespace
        self.events.append(f"start {self.name} in {namespace}")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.events.append(f"stop {self.name}")


class Greeter(trioscope.Service):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def greet(self, who: str) -> str:
        return f"hello {who}"

    async def terminate(self, reason: BaseException | None) -> None:
        self.events.append(f"terminate greeter {reason!r}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_in_order_on_a_signal(
    caplog: pytest.LogCaptureFixture, signum: signal.Signals
) -> None:
    caplog.set_level(logging.INFO, logger="trioscope.app")
    events: list[str] = []
    specs = [
        Recorded(events, "a").spec(),
        Greeter.child_spec(events, name="greeter"),
        Recorded(events, "z").spec(),
    ]

    async def app() -> None:
        await trioscope.serve(specs, id="root")
        events.append("serve returned")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        await wait_all_tasks_blocked()
        assert events == ["start a in app", "start z in app"]
        os.kill(os.getpid(), signum)
    assert events == [
        "start a in app",
        "start z in app",
        "stop z",
        "terminate greeter None",
        "stop a",
        "serve returned",
    ]
    [record] = [r for r in caplog.records if r.name == "trioscope.app"]
    assert record.getMessage() == f"received {signum.name}: stopping supervisor 'root'"
    assert (record.event, record.supervisor, record.signal) == (  # type: ignore[attr-defined]
        "signal",
        "root",
        signum,
    )


async def test_serve_opens_a_registry_for_its_services() -> None:
    answers: list[str] = []

    async def client(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        answers.append(await trioscope.call("greeter", Greeter.greet, "world"))
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep_forever()

    specs = [Greeter.child_spec([], name="greeter"), ChildSpec("client", client)]
    with trio.fail_after(5):
        await trioscope.serve(specs)
    assert answers == ["hello world"]


async def test_serve_returns_when_a_significant_child_ends() -> None:
    events: list[str] = []

    async def job(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.lowlevel.checkpoint()
        events.append("job done")

    specs = [
        Recorded(events, "a").spec(),
        ChildSpec("job", job, restart=Restart.TRANSIENT, significant=True),
    ]
    with no_stray_cancel():
        await trioscope.serve(specs, auto_shutdown="any_significant")
    assert events == ["start a in app", "job done", "stop a"]


async def test_serve_raises_start_error_bare() -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise OSError("port in use")

    events: list[str] = []
    with pytest.raises(trioscope.StartError) as info:
        await trioscope.serve([Recorded(events, "a").spec(), ChildSpec("broken", broken)])
    assert type(info.value) is trioscope.StartError
    assert isinstance(info.value.__cause__, OSError)
    assert events == ["start a in app", "stop a"]


_APP = textwrap.dedent(
    """
    import trio
    import trioscope

    async def child(*, task_status):
        task_status.started()
        print("ready", flush=True)
        try:
            await trio.sleep_forever()
        finally:
            print("stopped", flush=True)

    trioscope.run([trioscope.ChildSpec("child", child)], id="app")
    print("returned", flush=True)
    """
)


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_run_stops_on_sigint_and_exits_0() -> None:
    command = [sys.executable, "-c", _APP]
    output = b""
    # A guard against a hang, not a wait: the test proceeds as soon as the app says so.
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            )
            assert process.stdout is not None
            while b"ready\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the app exited before it was ready: {output!r}"
                output += chunk
            process.send_signal(signal.SIGINT)
            async for chunk in process.stdout:
                output += chunk
    assert process.returncode == 0
    assert output.decode().split() == ["ready", "stopped", "returned"]


_HANGING_APP = textwrap.dedent(
    """
    import math
    import signal
    import trio
    import trioscope

    # As when started from a terminal: a parent that ignores SIGINT (a
    # background job, some CI runners) would make Python ignore it too.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class Stuck(trioscope.Service):
        async def init(self):
            print("ready", flush=True)

        async def terminate(self, reason):
            try:
                # Printed inside the try: the interrupt that follows it always lands there.
                print("stopping forever", flush=True)
                await trio.sleep_forever()  # a stop that hangs, with no budget to end it
            finally:
                print("killed", flush=True)

    try:
        trioscope.run([Stuck.child_spec(shutdown=math.inf)])
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise SystemExit(3)
    """
)


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_a_second_sigint_ends_a_stop_that_hangs() -> None:
    command = [sys.executable, "-c", _HANGING_APP]
    output = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None
            for expected in [b"ready\n", b"stopping forever\n"]:
                while expected not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the app exited early: {output!r}"
                    output += chunk
                process.send_signal(signal.SIGINT)
            async for chunk in process.stdout:
                output += chunk
            assert process.stderr is not None
            errors = b"".join([chunk async for chunk in process.stderr])
    assert output.decode().split() == [
        "ready",
        "stopping",
        "forever",
        "killed",
        "interrupted",
    ], errors.decode()
    assert process.returncode == 3


_PORT_APP = textwrap.dedent(
    """
    import functools
    import trio
    import trioscope

    async def echo(stream):
        await stream.send_all(await stream.receive_some())

    def on_started(sup):
        # The root supervisor, once every child is ready: the app can say its port.
        [listener] = sup.which_children()[0].value
        print("port", listener.socket.getsockname()[1], flush=True)

    trioscope.run(
        [trioscope.ChildSpec("echo", functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))],
        on_started=on_started,
    )
    print("returned", flush=True)
    """
)


@pytest.mark.wall_clock("a subprocess: its start and output take real time")
async def test_run_calls_on_started_with_the_root_supervisor() -> None:
    command = [sys.executable, "-c", _PORT_APP]
    output = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            )
            assert process.stdout is not None
            while b"\n" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the app exited before it was ready: {output!r}"
                output += chunk
            word, port = output.decode().split()
            assert word == "port"
            async with await trio.open_tcp_stream("127.0.0.1", int(port)) as stream:
                await stream.send_all(b"ping")
                assert await stream.receive_some() == b"ping"
            process.send_signal(signal.SIGINT)
            async for chunk in process.stdout:
                output += chunk
    assert process.returncode == 0
    assert output.decode().split()[2:] == ["returned"]
