"""A Verge module in Python: sliding-window averages of machine temperatures.

What it does:

- Receives SimulatedTemperatureSensor readings on input ``input1``: JSON bodies
  ``{"machine": {"temperature", "pressure"}, "ambient": {...}, "timeCreated"}``.
- Keeps the last ``WindowSize`` machine temperatures (twin desired property ``WindowSize``,
  default 10, followed live) and, every ``WindowSize`` readings, sends on output
  ``averageOutput`` the JSON message
  ``{"average": x, "min": a, "max": b, "count": n, "windowSize": w}`` with content type
  ``application/json``, encoding ``utf-8`` and the application property ``source=py-averager``.
- Reports ``{"WindowSize": w}`` in its twin's reported properties, and logs through
  ``wasi:logging`` when the window size changes.
- Answers the direct methods ``GetStats`` (200, the current window's stats as JSON) and
  ``Reset`` (clears the window; 200, the stats of the now empty window). Other methods get 404.
- Rejects inputs that are not JSON, or lack a numeric ``machine.temperature``: the hub drops
  them and writes the reason to the module's log.

How to build: ``./build.sh`` in this directory. It installs ``componentize-py==0.25.1`` into
``<repo>/target/py-venv`` if missing and runs::

    componentize-py -d <repo>/wit -w verge:module/module componentize app \\
        -o <repo>/target/wasm32-wasip2/wasm/py_averager.wasm

The ``.wasm`` file is the component to name in a deployment manifest's ``settings.image``.

How it runs: componentize-py imports this file at build time and snapshots the interpreter, so
module-level code runs once, on the build machine. Everything that talks to the host (twin,
logging, outputs) therefore happens in the handlers, starting with ``init``. The host calls one
handler at a time, so the module-level state needs no locking.
"""

import json
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handlers import InputError_Reject, InputError_Retry, MethodResponse
from wit_world.imports import logging as wasi_logging
from wit_world.imports import outputs, twin, types

INPUT = "input1"
OUTPUT = "averageOutput"
SOURCE = "py-averager"
DEFAULT_WINDOW_SIZE = 10
#: Upper bound on ``WindowSize``, so that a typo in the twin cannot exhaust the memory cap.
MAX_WINDOW_SIZE = 10_000


@dataclass
class Stats:
    """The statistics of a window of temperatures; ``None`` where an empty window has none."""

    average: Optional[float]
    min: Optional[float]
    max: Optional[float]
    count: int
    windowSize: int  # noqa: N815 -- the JSON field name

    @classmethod
    def of(cls, temperatures: Iterable[float], window_size: int) -> "Stats":
        values = list(temperatures)
        if not values:
            return cls(None, None, None, 0, window_size)
        return cls(
            average=math.fsum(values) / len(values),
            min=min(values),
            max=max(values),
            count=len(values),
            windowSize=window_size,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def log(level: wasi_logging.Level, message: str) -> None:
    """Write to the module's log (``verge logs MODULE``)."""
    wasi_logging.log(level, "py-averager", message)


def parse_window_size(value: Any) -> int:
    """``WindowSize`` from the twin: a positive integer (``null`` means the default).

    Raises ``ValueError`` for anything else.
    """
    if value is None:
        return DEFAULT_WINDOW_SIZE
    # JSON numbers may arrive as 4.0; bool is an int subclass in Python but not a size.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_WINDOW_SIZE:
        raise ValueError(f"WindowSize must be an integer in 1..{MAX_WINDOW_SIZE}, not {value!r}")
    return value


def machine_temperature(body: bytes) -> float:
    """The ``machine.temperature`` of a reading. Raises ``ValueError`` if there is none."""
    reading = json.loads(body)  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    machine = reading.get("machine") if isinstance(reading, dict) else None
    temperature = machine.get("temperature") if isinstance(machine, dict) else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError("the reading has no numeric machine.temperature")
    return float(temperature)


class Averager:
    """The module's state: the window, and how many readings arrived since the last send."""

    def __init__(self) -> None:
        self.window: deque[float] = deque(maxlen=DEFAULT_WINDOW_SIZE)
        self.since_sent = 0

    @property
    def window_size(self) -> int:
        return self.window.maxlen or DEFAULT_WINDOW_SIZE

    def stats(self) -> Stats:
        return Stats.of(self.window, self.window_size)

    def reset(self) -> None:
        self.window.clear()
        self.since_sent = 0

    def resize(self, size: int) -> None:
        """Use a window of ``size``, keeping the newest readings, and report it."""
        if size != self.window_size:
            old = self.window_size
            self.window = deque(self.window, maxlen=size)
            self.since_sent = min(self.since_sent, len(self.window))
            log(wasi_logging.Level.INFO, f"window size changed from {old} to {size}")
        twin.patch_reported(json.dumps({"WindowSize": size}))

    def apply_desired(self, desired: dict) -> None:
        """Follow ``WindowSize`` in a desired-properties document or patch, if it is there."""
        if "WindowSize" not in desired:
            return
        try:
            size = parse_window_size(desired["WindowSize"])
        except ValueError as e:
            log(wasi_logging.Level.WARN, f"{e}; keeping {self.window_size}")
            return
        self.resize(size)

    def add(self, temperature: float) -> None:
        """Add a reading; every ``window_size`` readings, send the window's stats.

        The state changes only after the send succeeded: if the hub refuses the message, the
        input is retried and must find the module as it was.
        """
        size = self.window_size
        due = self.since_sent + 1 >= size
        if due:
            stats = Stats.of([*self.window, temperature][-size:], size)
            send(OUTPUT, stats)
        self.window.append(temperature)
        self.since_sent = 0 if due else self.since_sent + 1


def send(output: str, stats: Stats) -> None:
    """Send ``stats`` as a JSON message on ``output``. Raises ``Err(types.Error)``."""
    # `with` drops the message resource now instead of whenever the garbage collector runs.
    with types.Message(stats.to_json().encode()) as message:
        message.set_system_property(types.SystemProperty.CONTENT_TYPE, "application/json")
        message.set_system_property(types.SystemProperty.CONTENT_ENCODING, "utf-8")
        message.set_property("source", SOURCE)
        outputs.send_event(output, message)


STATE = Averager()


def response(status: int, payload: Any) -> MethodResponse:
    return MethodResponse(status=status, payload=json.dumps(payload))


class Handlers(exports.Handlers):
    """The exported ``verge:module/handlers``. componentize-py needs every function defined.

    WIT errors are raised: ``raise Err(types.Error_Other(...))`` returns ``err(other(...))``.
    Any other exception escaping a handler traps, and the runtime restarts the module.
    """

    def init(self) -> None:
        desired = json.loads(twin.desired())
        STATE.apply_desired(desired)
        if "WindowSize" not in desired:
            twin.patch_reported(json.dumps({"WindowSize": STATE.window_size}))
        log(wasi_logging.Level.INFO, f"averaging windows of {STATE.window_size} readings")

    def handle_input(self, input: str, message: types.Message) -> None:
        with message:
            if input != INPUT:
                raise Err(InputError_Reject(f"no input named {input!r}"))
            try:
                temperature = machine_temperature(message.body())
            except ValueError as e:
                raise Err(InputError_Reject(f"not a temperature reading: {e}")) from None
        try:
            STATE.add(temperature)
        except Err as e:
            # The hub refused the message (busy, too large): have the input offered again.
            raise Err(InputError_Retry(f"cannot send on {OUTPUT}: {e.value}")) from None

    def desired_changed(self, patch: str) -> None:
        try:
            STATE.apply_desired(json.loads(patch))
        except ValueError as e:
            raise Err(types.Error_InvalidArgument(f"desired patch is not JSON: {e}")) from None

    def invoke_method(self, name: str, payload: str) -> MethodResponse:
        if name == "GetStats":
            return response(200, asdict(STATE.stats()))
        if name == "Reset":
            STATE.reset()
            log(wasi_logging.Level.INFO, "window cleared by Reset")
            return response(200, asdict(STATE.stats()))
        return response(404, {"message": f"no method {name!r}"})

    def on_timer(self) -> None:
        # This module never schedules the timer; nothing to do.
        pass
