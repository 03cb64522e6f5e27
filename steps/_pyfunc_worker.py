"""Predict with an MLflow pyfunc model inside a model package's own environment.

Run as a script by the package environment's Python, never imported by geomlops: it needs only
the standard library, numpy and the package's own MLflow (on Argo it runs in the model's image,
which has no geomlops). It loads the model once. Two modes:

**Stream** (``python _pyfunc_worker.py MODEL [--device auto|cpu|cuda]``): arrays come in on
stdin and predictions go out on stdout, as frames. A frame is a 4-byte big-endian length, a
UTF-8 JSON header of that length, then the raw C-order bytes of the array the header describes::

    {"shape": [N, C, H, W], "dtype": "<f4", "nbytes": 4194304}   request and answer
    {"ready": true, "device": "cpu", "flavor": "python_function"}   first frame, model loaded
    {"error": "ModuleNotFoundError: No module named 'torch'"}       load or predict failed

After an ``error`` answer to a request the worker goes on with the next one; after one in place
of ``ready`` it exits. Whatever the model prints goes to stderr, so it never mixes with frames.

Why this framing: it is the same over a pipe and a socket (byte streams), costs one copy each
way at memory speed, and needs nothing but the standard library and numpy in the model's
environment. Shared memory (``multiprocessing.shared_memory``) would save that copy, but needs a
segment per batch size, a second channel for ready/error signalling and clean-up of segments
when either side dies, and it does not cross a host boundary; Arrow IPC would put pyarrow into
every model environment. Next to the model's own time the copy is small (a 512 x 512 x 3
float32 block is 3 MiB, copied in about a millisecond).

**Socket** (``python _pyfunc_worker.py MODEL --listen 127.0.0.1:0 --port-file PATH``): the same
frames over one TCP connection. The worker binds first and writes the port it got to
``PATH`` (written whole, then renamed), then loads the model and answers the first connection,
ready frame first, and exits when it closes. On Argo it runs so as a sidecar in the model's image,
beside the geomlops step that reads the imagery: the pod's containers share ``localhost``, and
port 0 lets parallel pods on one machine (the local runner) each get their own.

**Commands** (``--mode commands``, either transport): no model is loaded; each request is a
header only, ``{"run": "COMMAND", "cwd": "FOLDER"}``, and the worker runs ``bash -c COMMAND`` in
``FOLDER`` (relative to ``--shared``: the pod's volume both containers mount, by default the
port file's folder) and answers ``{"returncode": N, "tail": [last error lines]}``. It is how
geomlops runs a package's own ``inference`` and ``postprocess`` entry points in the model's image
when its MLM item chooses them: the step puts the package's copy and the files in the shared
folder and names them relative to it, so that the same request holds wherever each container
mounts it. The command's output goes to the worker's stderr (the pod's log).

Device: ``cuda`` (or ``auto``) uses a GPU when torch is importable and reports one; the model is
then loaded with ``model_config={"device": "cuda"}`` where its flavor takes a model config.
Otherwise the CPU. The device chosen is in the ready frame (stream) or on stderr (file).
"""

import argparse
import json
import os
import struct
import sys
import traceback
from typing import IO, Any

_LENGTH = struct.Struct(">I")


def _choose_device(requested: str) -> str:
    """``cuda`` when asked for (or ``auto``) and torch reports a GPU, else ``cpu``."""
    if requested not in ("cuda", "auto"):
        return "cpu"
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "cpu"
    try:
        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA install means the CPU
        return "cpu"


def _load(model_uri: str, device: str) -> tuple[Any, str]:
    """The pyfunc model and its flavor; the device passed where the flavor takes a config."""
    import mlflow.pyfunc

    if device == "cuda":
        try:
            model = mlflow.pyfunc.load_model(model_uri, model_config={"device": "cuda"})
        except TypeError:  # an MLflow or flavor without model_config
            model = mlflow.pyfunc.load_model(model_uri)
    else:
        model = mlflow.pyfunc.load_model(model_uri)
    flavor = getattr(getattr(model, "metadata", None), "flavors", {}) or {}
    loader = (flavor.get("python_function") or {}).get("loader_module", "python_function")
    return model, str(loader)


def _message(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ").strip()


def _read_exact(stream: IO[bytes], count: int) -> bytearray | None:
    """Exactly ``count`` bytes, or None at the end of the stream before any."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    got = 0
    while got < count:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            if got == 0:
                return None
            raise EOFError(f"stream ended after {got} of {count} bytes")
        got += n
    return buffer


def _write_frame(stream: IO[bytes], header: dict[str, Any], payload: Any = b"") -> None:
    data = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    if payload:
        stream.write(payload)
    stream.flush()


def _serve(model: Any, np: Any, protocol: IO[bytes], requests: IO[bytes]) -> int:
    while True:
        length = _read_exact(requests, _LENGTH.size)
        if length is None:
            return 0
        size = _LENGTH.unpack(bytes(length))[0]
        header = json.loads(bytes(_read_exact(requests, size) or b""))
        shape, dtype = tuple(header["shape"]), np.dtype(header["dtype"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        payload = _read_exact(requests, nbytes) if nbytes else bytearray()
        if payload is None:  # the caller went away mid-request
            return 0
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        try:
            result = np.ascontiguousarray(np.asarray(model.predict(array)))
            if result.dtype.hasobject:
                raise TypeError(f"the model returned an array of Python objects ({result.dtype})")
        except Exception as err:  # noqa: BLE001 - reported to the caller, who raises
            traceback.print_exc()
            _write_frame(protocol, {"error": _message(err)})
            continue
        answer = {"shape": list(result.shape), "dtype": result.dtype.str, "nbytes": result.nbytes}
        _write_frame(protocol, answer, memoryview(result).cast("B") if result.nbytes else b"")


#: lines of a command's stderr sent back with its exit code, and the most kept of each line
_TAIL_LINES = 12
_LINE_CHARS = 500
#: the command running now (commands mode): its process group is ended with the worker
_RUNNING: list[Any] = []


def _end_running(signum: int, frame: Any) -> None:
    """SIGTERM: end the command running now (its whole process group), then the worker."""
    import contextlib
    import signal

    for proc in _RUNNING:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
    sys.exit(128 + signum)


def _run_one(command: str, cwd: str) -> dict[str, Any]:
    """Run ``bash -c command`` in ``cwd`` (a session of its own), its output passed to stderr;
    its exit code (negative: the signal that killed it) and last error lines."""
    import collections
    import subprocess
    import threading

    print(f"running in {cwd}: {command}", file=sys.stderr, flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=2,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _RUNNING.append(proc)

    def pump() -> None:  # lines of progress bars end in \r: only the last part is kept
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            line = raw.decode("utf-8", errors="replace").rstrip().rsplit("\r", 1)[-1]
            if line.strip():
                tail.append(line[-_LINE_CHARS:])

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait()
    finally:
        _RUNNING.remove(proc)
    reader.join(timeout=10)  # a child left behind may hold the pipe: do not wait for it
    return {"returncode": code, "tail": list(tail)}


def _run_commands(shared: str, protocol: IO[bytes], requests: IO[bytes]) -> int:
    """Answer ``run`` requests (commands mode) until the caller closes the connection."""
    import signal

    signal.signal(signal.SIGTERM, _end_running)
    while True:
        try:
            length = _read_exact(requests, _LENGTH.size)
            if length is None:
                return 0
            raw = _read_exact(requests, _LENGTH.unpack(bytes(length))[0]) or b""
        except EOFError:  # the caller went away mid-request
            return 0
        try:
            header = json.loads(bytes(raw))
            if not isinstance(header, dict):
                raise ValueError(f"expected a JSON object, got {type(header).__name__}")
        except ValueError as err:
            _write_frame(protocol, {"error": f"malformed request: {err}"})
            continue
        command, folder = str(header.get("run", "")), str(header.get("cwd", ""))
        cwd = os.path.join(shared, folder)
        if not command or not os.path.isdir(cwd):
            _write_frame(protocol, {"error": f"no command, or no folder {folder!r} in {shared}"})
            continue
        _write_frame(protocol, _run_one(command, cwd))


def _listen(address: str, port_file: str) -> Any:
    """A server socket bound to ``HOST:PORT``; its port written to ``port_file``."""
    import socket

    host, _, port = address.rpartition(":")
    server = socket.create_server((host or "127.0.0.1", int(port)))
    partial = f"{port_file}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(str(server.getsockname()[1]))
    os.replace(partial, port_file)  # the caller sees a port only once it is whole
    return server


def main(argv: list[str] | None = None) -> int:
    """Run the worker; returns the exit code."""
    parser = argparse.ArgumentParser(description="Predict with a pyfunc model in its own environment.")
    parser.add_argument("model", help="the model's URI or local folder (with MLmodel)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--mode",
        choices=("pyfunc", "commands"),
        default="pyfunc",
        help="pyfunc: load the model and predict arrays; commands: run the package's entry points",
    )
    parser.add_argument("--shared", default="", help="commands mode: the folder requests are relative to")
    parser.add_argument("--listen", metavar="HOST:PORT", help="socket mode: serve one connection here")
    parser.add_argument(
        "--port-file",
        default=os.environ.get("GEOMLOPS_WORKER_PORT_FILE", ""),
        help="socket mode: where the port is written (default: $GEOMLOPS_WORKER_PORT_FILE)",
    )
    args = parser.parse_args(argv)
    if args.listen and not args.port_file:
        parser.error("--listen needs --port-file (or GEOMLOPS_WORKER_PORT_FILE)")
    server = _listen(args.listen, args.port_file) if args.listen else None
    protocol: IO[bytes] = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the model's own prints go to stderr
    import numpy as np

    device = _choose_device(args.device)
    model, flavor, failure = None, "", None
    if args.mode == "pyfunc":
        try:
            model, flavor = _load(args.model, device)
        except Exception as err:  # noqa: BLE001 - reported to the caller, who raises
            traceback.print_exc()
            failure = f"cannot load the model {args.model}: {_message(err)}"
    requests: IO[bytes] = sys.stdin.buffer
    if server is not None:
        print(f"waiting for the geomlops step on port {server.getsockname()[1]}", file=sys.stderr)
        connection, _ = server.accept()
        requests, protocol = connection.makefile("rb"), connection.makefile("wb")
    if failure is not None:
        _write_frame(protocol, {"error": failure})
        return 1
    _write_frame(protocol, {"ready": True, "device": device, "flavor": flavor, "mode": args.mode})
    if args.mode == "commands":
        beside_port = os.path.dirname(os.path.abspath(args.port_file)) if args.port_file else ""
        shared = args.shared or beside_port or os.getcwd()
        print(f"running the package's commands for {args.model} in {shared} ({device})", file=sys.stderr)
        return _run_commands(shared, protocol, requests)
    print(f"model {args.model} loaded on {device} ({flavor})", file=sys.stderr)
    return _serve(model, np, protocol, requests)


if __name__ == "__main__":
    sys.exit(main())
