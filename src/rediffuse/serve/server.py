"""The local server behind `rediffuse serve`: one page, the runs' descriptions, and generations streamed as
server-sent events.

Routes (nothing else is served, and no path maps to a file): `/` the page (from the package), `/api/runs` the runs
given on the command line, `/api/generate?run=...` one generation's frames, `/api/edit?run=...&mask=...` an edit
of one image of that run's latest generation (inpainting under a mask drawn on the page, or SDEdit).
Safe by default: it listens on 127.0.0.1, reads no file but the runs it was given, bounds every request
(`Limits`), runs one generation at a time (a second is refused with 409 and a message), stops a generation
whose client has gone (at its next step), and answers malformed requests with a 4xx and a one-line JSON
message, never a traceback.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Generator
from urllib.parse import urlsplit

from rediffuse.errors import UsageError
from rediffuse.sampling.run import Run, load
from rediffuse.serve.frames import finished, frame, thin
from rediffuse.serve.params import BadRequest, EditParams, Params, allowed_samplers, parse_edit, parse_params
from rediffuse.tuning.grids import GRIDS_FILE

SHOWN_KINDS = ("points", "images", "audio", "text")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Limits:
    """The largest request the server takes."""

    samples: int = 64  # images, clips or texts per generation
    points: int = 2000  # points per generation
    steps: int = 1000
    length: int = 4096  # characters of a text sample
    prompt: int = 1000  # characters of a prompt
    frames: int = 60  # frames sent per generation (every k-th step)
    url: int = 4096  # characters of a request line's path and query


@dataclass
class Generation:
    """What one generation did: the steps it ran, whether its client left early, whether it finished."""

    run: int
    steps: int = 0
    stopped: bool = False
    done: bool = False
    started: float = field(default_factory=time.monotonic)


class ClientGone(Exception):
    """The browser closed the stream."""


class Server:
    """The runs, the one-generation lock and the HTTP server around them."""

    def __init__(self, paths: list[str | Path], host: str = "127.0.0.1", port: int = 8000,
                 limits: Limits = Limits(), device: str = "cpu") -> None:
        self.runs: list[Run] = [load(p, device=device) for p in paths]
        self.names = [Path(p).name or str(p) for p in paths]
        self.limits, self.device = limits, device
        self.lock = threading.Lock()
        self.last: Generation | None = None
        self.latest: dict[int, Any] = {}  # an image or audio run's latest samples, which the page may edit
        self.httpd = ThreadingHTTPServer((host, port), handler(self))
        self.httpd.daemon_threads = True

    @property
    def address(self) -> str:
        """The page's URL."""
        host, port = self.httpd.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in str(host) else host}:{port}/"

    def serve_forever(self) -> None:
        """Answer requests until shutdown()."""
        self.httpd.serve_forever(poll_interval=0.1)

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def describe(self) -> list[dict[str, Any]]:
        """What the page may ask of each run: its kind, classes, samplers (few-step and tuned plans too)."""
        return [describe_run(i, name, run, self.limits) for i, (name, run) in enumerate(zip(self.names, self.runs))]

    def generate(self, params: Params, send: Callable[[str, dict[str, Any]], None]) -> Generation:
        """Run one generation, sending its frames; a ClientGone from send stops it at that step."""
        run = self.runs[params.run]
        return self.stream(params, run, send, lambda: run.sample_steps(
            params.n, params.cls, params.sampler, params.steps, params.guidance, params.seed, params.spacing,
            batch_size=params.n, device=self.device, **params.text()))

    def edit(self, params: EditParams, send: Callable[[str, dict[str, Any]], None]) -> Generation:
        """Redraw the masked pixels of one image (or a region of one clip) of the run's latest generation, or all
        of it (sdedit)."""
        run, kept = self.runs[params.run], self.latest.get(params.run)
        if kept is None or params.sample >= len(kept):
            raise BadRequest(f"generate with run {params.run} first; sample {params.sample} is not among its "
                             f"{0 if kept is None else len(kept)} latest samples")
        x = kept[params.sample:params.sample + 1]
        missing = None if params.method == "sdedit" else params.pixels(x.shape)
        return self.stream(params, run, send, lambda: run.edit_steps(
            x, missing, params.method, strength=params.strength, cond=params.cls, steps=params.steps,
            guidance=params.guidance, seed=params.seed, device=self.device), keep=False)

    def stream(self, params: Any, run: Run, send: Callable[[str, dict[str, Any]], None],
               start: Callable[[], Generator[Any, None, Any]], keep: bool = True) -> Generation:
        """Send the frames of the draw `start()` begins (every k-th step, a comment line otherwise), then the
        result; keep an image run's samples for editing."""
        kind, model, calls = run.modality.name, run.model, [0]
        network = getattr(model, "net", model)  # the network itself: every evaluation, whoever calls it
        hook = network.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        record = self.last = Generation(params.run)
        try:
            steps = start()
            every = thin(params.expected_steps(run), self.limits.frames)
            while True:
                try:
                    step = next(steps)
                except StopIteration as end:
                    drawn = end.value
                    break
                record.steps += 1
                shown = record.steps == 1 or record.steps % every == 0
                try:  # a step not shown still sends a comment line, so a closed page is noticed at once
                    send("frame", {"step": record.steps, "level": float(step.level), "nfe": calls[0],
                                   "seconds": time.monotonic() - record.started,
                                   **frame(kind, run.spec, step.x)}) if shown else send("ping", {})
                except ClientGone:
                    record.stopped = True
                    steps.close()  # the draw stops at its next step
                    return record
            record.done = True
            if keep and kind in ("images", "audio"):
                self.latest[params.run] = drawn.samples
            result = finished(kind, run.spec, drawn.samples)
            if not keep:
                result.pop("singles", None)  # the page keeps editing the generation's images
            send("done", {"steps": record.steps, "nfe": calls[0], "seconds": time.monotonic() - record.started,
                          **result})
            return record
        finally:
            hook.remove()


def describe_run(index: int, name: str, run: Run, limits: Limits) -> dict[str, Any]:
    """One run as the page lists it."""
    kind, spec = run.modality.name, run.spec
    out: dict[str, Any] = {"index": index, "name": name, "kind": kind, "shown": kind in SHOWN_KINDS,
                           "classes": run.num_classes, "most": limits.points if kind == "points" else limits.samples}
    if run.modality.gaussian:
        chosen = run.choice()  # the run's recommended sampling, else its default
        out["samplers"] = allowed_samplers(run)
        out["default"] = {"sampler": chosen.sampler, "steps": chosen.steps, "guidance": chosen.guidance}
        grids = run.path / GRIDS_FILE
        saved = json.loads(grids.read_text()) if grids.is_file() else {}
        out["tuned"] = [{"sampler": s, "steps": int(k)} for s, entries in saved.items() for k in entries]
    else:
        causal = spec.bos_id is not None
        out["orders"] = [] if causal else ["random", "confidence"]
        out["default"] = {"steps": spec.block or int(spec.data.shape[0]), "length": int(spec.data.shape[0])}
        out["text"] = {"causal": causal, "block": spec.block}
    return out


def handler(server: Server) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to one Server."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "rediffuse"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            """Quiet: the terminal shows the address and errors only."""

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            """The page, the runs, or a generation."""
            if len(self.path) > server.limits.url:
                return self.reply(414, {"error": f"the request is longer than {server.limits.url} characters"})
            parts = urlsplit(self.path)
            if parts.path in ("/", "/index.html"):
                page = resources.files("rediffuse.serve").joinpath("page.html").read_bytes()
                return self.send(200, "text/html; charset=utf-8", page)
            if parts.path == "/api/runs":
                return self.reply(200, {"runs": server.describe()})
            if parts.path == "/api/generate":
                return self.generate(parts.query)
            if parts.path == "/api/edit":
                return self.generate(parts.query, edit=True)
            return self.reply(404, {"error": f"no such page: {parts.path[:80]!r}; the page is at /"})

        def do_POST(self) -> None:  # noqa: N802
            """Nothing takes a body."""
            self.reply(405, {"error": "only GET requests are served"})

        do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

        def generate(self, query: str, edit: bool = False) -> None:
            """Check the request, take the lock (or 409) and stream the generation (or the edit)."""
            try:
                params = (parse_edit if edit else parse_params)(query, server.runs, server.limits)
                run = server.runs[params.run]
                if run.modality.name not in (("images", "audio") if edit else SHOWN_KINDS):
                    what = "image and audio" if edit else "points, image, audio and text"
                    raise BadRequest(f"the page {'edits' if edit else 'shows'} {what} runs; run {params.run} is "
                                     f"{run.modality.a_run}")
            except (BadRequest, UsageError) as err:
                return self.reply(400, {"error": " ".join(str(err).split())})
            if not server.lock.acquire(blocking=False):
                return self.reply(409, {"error": "another generation is running; wait for it to end (one at a "
                                                 "time per server)"})
            try:
                self.stream(params, edit)
            finally:
                server.lock.release()

        def stream(self, params: Any, edit: bool) -> None:
            """Server-sent events: a `frame` per shown step, then `done` (or `error`)."""
            started = False

            def send(event: str, data: dict[str, Any]) -> None:
                nonlocal started
                if not started:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    started = True
                try:
                    self.wfile.write(b": ping\n\n" if event == "ping" else
                                     f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as err:
                    raise ClientGone() from err

            try:
                (server.edit if edit else server.generate)(params, send)
            except ClientGone:
                pass
            except (UsageError, BadRequest) as err:
                self.close_connection = True
                if not started:
                    return self.reply(400, {"error": " ".join(str(err).split())})
            except Exception as err:  # one line to the page and the terminal, never a traceback
                message = " ".join(str(err).split()) or type(err).__name__
                print(f"rediffuse serve: error: {message}", file=sys.stderr)
                try:
                    send("error", {"error": message}) if started else self.reply(500, {"error": message})
                except ClientGone:
                    pass
            self.close_connection = True

        def reply(self, status: int, data: dict[str, Any]) -> None:
            """A JSON answer."""
            self.send(status, "application/json", json.dumps(data).encode())

        def send(self, status: int, content_type: str, body: bytes) -> None:
            """A complete answer with its length."""
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve(paths: list[str | Path], host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          ready: Callable[[Server], None] | None = None) -> None:
    """Serve the page until interrupted, printing its address (and a warning off the loopback interface)."""
    server = Server(paths, host, port, device=device)
    print(f"rediffuse serve: {len(server.runs)} run(s) at {server.address} (Ctrl-C stops)", flush=True)
    if host not in LOOPBACK:
        print(f"rediffuse: warning: listening on {host}: anyone who can reach this machine on port {port} can use "
              "the page and its CPU", file=sys.stderr, flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
