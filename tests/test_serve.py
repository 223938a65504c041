"""`rediffuse serve` without a browser: the routes, safety (loopback by default, no file outside the page, bounded
and checked requests, 4xx answers as one-line JSON), one generation at a time, and a page that closes its stream
stopping the generation within a few steps."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from helpers import AUDIO_NET, IMAGE_NET, POINTS, STUDENT, tiny, write_fsdd
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.serve import Server, serve
from rediffuse.train import train


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    points = folder / "points"
    train(TrainConfig(out=str(points), steps=10, net="mlp", **POINTS))
    text = tiny(folder, steps=5, out=str(folder / "text"), net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    train(text)
    digits = folder / "digits"
    train(TrainConfig(data="digits", out=str(digits), net="unet", net_kwargs=IMAGE_NET, steps=3, batch_size=8,
                      warmup_steps=1, progress=False))
    write_fsdd(folder / "fsdd", digits=range(2), speakers=("ann",), indices=range(4), n=600)
    speech = folder / "speech"
    train(TrainConfig(data=f"fsdd:{folder / 'fsdd'}", out=str(speech), clip_length=512, net_kwargs=AUDIO_NET,
                      steps=3, batch_size=8, warmup_steps=1, progress=False))
    student = folder / "student"
    assert main(["distill", str(points), "--out", str(student), "--steps", "5", *STUDENT]) == 0
    (points / "grids.json").write_text(json.dumps({"ipndm": {"5": {}}, "dpmpp-2m": {"4": {}, "6": {}}}))
    running = Server([points, Path(text.out), digits, speech, student], port=0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()


def request(server: Server, path: str, method: str = "GET") -> tuple[int, str]:
    """(status, body) of one raw request (the path sent exactly as given)."""
    host, port = server.httpd.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.putrequest(method, path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, body


def events(body: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent event stream (comment lines skipped)."""
    out = []
    for chunk in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if line and not line.startswith(":"))
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_it_listens_on_loopback_and_lists_the_runs_and_the_page_needs_no_network(server):
    assert server.httpd.server_address[0] == "127.0.0.1" and server.address.startswith("http://127.0.0.1:")
    status, body = request(server, "/api/runs")
    runs = json.loads(body)["runs"]
    assert status == 200 and [r["kind"] for r in runs] == ["points", "text", "images", "audio", "points"]
    assert runs[0]["tuned"] == [{"sampler": "ipndm", "steps": 5}, {"sampler": "dpmpp-2m", "steps": 4},
                                {"sampler": "dpmpp-2m", "steps": 6}]  # tuned plans are sampler choices
    assert runs[4]["samplers"] == ["consistency"] and runs[4]["default"] == {"sampler": "consistency", "steps": 2,
                                                                                "guidance": 1.0}
    assert "heun" in runs[0]["samplers"] and runs[1]["orders"] == ["random", "confidence"]
    status, page = request(server, "/")
    assert status == 200 and "<canvas" in page and "http://" not in page and "https://" not in page


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                                  "/api/../../../etc/passwd", "//etc/passwd", "/page.html/../../server.py",
                                  "/%2e%2e%5c%2e%2e%5cetc%5cpasswd"])
def test_no_path_reaches_a_file(server, path):
    status, body = request(server, path)
    assert status == 404 and "root:" not in body and "import" not in body and json.loads(body)["error"]


@pytest.mark.parametrize("query,status,fragment", [
    ("run=0&n=100000", 400, "n must be in 1..2000"),
    ("run=1&n=65", 400, "n must be in 1..64"),
    ("run=0&steps=1000000", 400, "steps must be in 1..1000"),
    ("run=1&prompt=" + "a" * 1500, 400, "at most 1000"),
    ("run=0&" + "x" * 5000, 414, "longer than 4096"),
    ("run=0&n=abc", 400, "n must be a whole number"),
    ("run=0&foo=1", 400, "unknown parameter 'foo'"),
    ("run=7", 400, "run must be in 0..4"),
    ("n=3", 400, "give run=0..4"),
    ("run=4&sampler=heun", 400, "samples with consistency"),
    ("run=0&n=1&n=2", 400, "given 2 times"),
    ("run=0&guidance=nan", 400, "guidance must be in 0..20"),
    ("run=0&sampler=rm%20-rf", 400, "got sampler 'rm -rf'"),
    ("run=0&class=3", 400, "has no classes"),
    ("run=1&sampler=heun", 400, "its own sampler"),
    ("run=0&prompt=hi", 400, "--prompt"),
])
def test_bad_requests_get_a_4xx_and_one_line(server, query, status, fragment):
    got, body = request(server, "/api/generate?" + query)
    message = json.loads(body)["error"]
    assert got == status and fragment in message and "\n" not in message and "Traceback" not in body
    assert request(server, "/api/runs", "POST")[0] == 405


def test_a_generation_streams_frames_then_the_result(server):
    status, body = request(server, "/api/generate?run=0&n=200&sampler=euler&steps=12&seed=3")
    found = events(body)
    frames = [d for e, d in found if e == "frame"]
    assert status == 200 and len(frames) >= 3 and found[-1][0] == "done"
    done = found[-1][1]
    assert done["nfe"] == 12 and len(done["xy"]) == 200 and frames[0]["xy"] != frames[-1]["xy"]
    status, body = request(server, "/api/generate?run=1&n=2&steps=8&prompt=ab&length=20")
    texts = [d["texts"] for e, d in events(body)]
    assert status == 200 and "_" in texts[0][0] and all(len(t) == 20 and t.startswith("ab") for t in texts[-1])
    status, body = request(server, "/api/generate?run=1&n=1&infill=ab___cd")
    final = events(body)[-1][1]["texts"][0]
    assert status == 200 and len(final) == 7 and final[:2] == "ab" and final[-2:] == "cd" and "_" not in final


def open_stream(server: Server, query: str) -> socket.socket:
    """A raw connection that asked for a generation and has read its headers and first frame."""
    sock = socket.create_connection(server.httpd.server_address[:2], timeout=60)
    sock.sendall(f"GET /api/generate?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    seen = b""
    while b"event: frame" not in seen:
        seen += sock.recv(4096)
    assert seen.startswith(b"HTTP/1.1 200") or seen.startswith(b"HTTP/1.0 200")
    return sock


def test_one_generation_at_a_time_and_a_closed_page_stops_its_generation(server):
    sock = open_stream(server, "run=0&n=2000&sampler=euler&steps=1000")  # seconds of work: still running below
    status, body = request(server, "/api/generate?run=0&n=5&steps=4")
    assert status == 409 and "another generation is running" in json.loads(body)["error"]
    before = server.last.steps
    sock.close()  # the page goes away
    for _ in range(600):
        if server.last.stopped or server.last.done:
            break
        threading.Event().wait(0.05)
    # noticed at the first or second write after the close (each step writes at least a comment line)
    assert server.last.stopped and not server.last.done and server.last.steps - before <= 10, server.last
    assert request(server, "/api/generate?run=0&n=5&steps=4")[0] == 200  # the lock was released


def test_another_host_prints_a_warning(tmp_path, server, capsys):
    runs = [server.runs[0].path]
    serve(runs, host="0.0.0.0", port=0, ready=lambda s: threading.Thread(target=s.httpd.shutdown).start())
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "\n" == err[-1]


def test_an_image_of_the_latest_generation_is_edited_under_a_mask(server):
    status, body = request(server, "/api/edit?run=2&sample=0&mask=" + "f" * 16 + "&steps=4")
    assert status == 400 and "generate with run 2 first" in json.loads(body)["error"]
    status, body = request(server, "/api/generate?run=2&n=4&steps=4&sampler=euler")
    assert status == 200 and len(events(body)[-1][1]["singles"]) == 4
    for query, fragment in [("mask=ff", "mask must be 16 hex digits"), ("mask=" + "z" * 16, "16 hex digits"),
                            ("mask=" + "f" * 16 + "&method=magic", "method must be one of"),
                            ("mask=" + "f" * 16 + "&strength=2", "strength must be in"),
                            ("mask=" + "f" * 16 + "&n=3", "unknown parameter 'n'")]:
        status, body = request(server, "/api/edit?run=2&sample=0&steps=4&" + query)
        assert status == 400 and fragment in json.loads(body)["error"], query
    error = json.loads(request(server, "/api/edit?run=0&mask=ff")[1])["error"]
    assert error.startswith("the page edits image and audio runs")
    for method in ("replace", "smc"):
        status, body = request(server, f"/api/edit?run=2&sample=1&steps=4&method={method}&mask=ff000000000000ff")
        found = events(body)
        assert status == 200 and found[-1][0] == "done" and found[-1][1]["nfe"] > 0 and "singles" not in found[-1][1]
    status, body = request(server, "/api/edit?run=2&sample=3&steps=4&method=sdedit&strength=0.4")
    assert status == 200 and events(body)[-1][0] == "done"


def test_a_region_of_the_latest_clip_is_redrawn(server):
    status, body = request(server, "/api/generate?run=3&n=2&steps=3&sampler=euler")
    assert status == 200 and len(events(body)[-1][1]["wavs"]) == 2
    for region, fragment in [("", "region takes seconds as A:B"), ("0.2:9", "lies outside the 0.064 s clips")]:
        status, body = request(server, f"/api/edit?run=3&sample=0&region={region}")
        assert status == 400 and fragment in json.loads(body)["error"]
    status, body = request(server, "/api/edit?run=3&sample=1&steps=3&method=replace&region=0.01:0.03")
    done = events(body)[-1]
    assert status == 200 and done[0] == "done" and len(done[1]["wavs"]) == 1


def test_a_few_step_student_streams_its_two_steps(server):
    status, body = request(server, "/api/generate?run=4&n=100&sampler=consistency&steps=2")
    found = events(body)
    assert status == 200 and found[-1][0] == "done" and found[-1][1]["nfe"] == 2 and len(found[-1][1]["xy"]) == 100
