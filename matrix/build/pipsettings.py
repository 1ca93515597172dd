"""Give `pip install` inside `docker build` the host's pip settings, and leave none in the image.

Builds must work behind a mirror or a TLS-inspecting proxy, so pip in the build needs the host's
index URLs, trusted hosts, proxy and CA bundle; none may stay in the image (index URLs can carry
credentials, and a site's CA bundle and mirror names are its own). `serve` hands them to the one
RUN that needs them, once; `redact` masks credentials in whatever is logged.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from ast import literal_eval
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Where the Dockerfile's pip RUN puts the fetched files; it deletes the folder before it ends.
SETTINGS_DIR = "/tmp/tf-load-matrix-pip"

# How long the build's fetch waits to connect and for each read, and how long the server waits
# for a client's request: seconds, on loopback, for a few kilobytes.
FETCH_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 10
# Run in the build by the venv's python (no curl in a slim image): the URL comes from the build
# arg's environment variable, the folder is its argument, the answer is a JSON object of file
# name -> text. Plain stdlib, as old as Python 3.5.
FETCH_SCRIPT = (
    "import json, os, sys, urllib.request; "
    "files = json.load(urllib.request.urlopen(os.environ['PIP_SETTINGS_URL'], "
    f"timeout={FETCH_TIMEOUT_S})); "
    '[open(sys.argv[1] + "/" + name, "w").write(text) for name, text in files.items()]'
)
# A URL's user:password (or token) before its host, up to the first `/`.
_CREDENTIALS = re.compile(r"(?<=://)[^/\s]+@")

# pip's own precedence for `pip install`, lowest first: config files' [global], then [install],
# then PIP_* environment variables (which `pip config list` reports as the `:env:` section).
_SECTIONS = ("global", "install", ":env:")

_HTTP_URL = re.compile(r"https?://\S+\Z")
_HOST = re.compile(r"[A-Za-z0-9.\-\[\]:]+\Z")
_NUMBER = re.compile(r"\d+(\.\d+)?\Z")

# Host option -> (key in the container's pip.conf, which values are kept). Everything else is
# dropped: find-links, constraint, cert paths etc. name host paths that do not exist in a build,
# and file:// indexes are host folders too.
_KEPT: dict[str, tuple[str, Callable[[str], re.Match[str] | None]]] = {
    "index-url": ("index-url", _HTTP_URL.match),
    "extra-index-url": ("extra-index-url", _HTTP_URL.match),
    "trusted-host": ("trusted-host", _HOST.match),
    "proxy": ("proxy", _HTTP_URL.match),
    "timeout": ("timeout", _NUMBER.match),
    "default-timeout": ("timeout", _NUMBER.match),
    "retries": ("retries", _NUMBER.match),
}

# Where pip (through requests) finds a proxy and a CA bundle when its own options name none.
_PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")
_CA_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class PipSettings:
    """What pip in a build needs from the host: pip.conf options and the CA bundle's text."""

    options: tuple[tuple[str, str], ...] = ()
    ca_bundle: str = ""

    def __bool__(self) -> bool:
        return bool(self.options or self.ca_bundle)

    def files(self) -> dict[str, str]:
        """The files the build writes into SETTINGS_DIR; pip reads pip.conf, which names ca.pem."""
        lines = [f"{key} = {value}" for key, value in self.options]
        if self.ca_bundle:
            lines.append(f"cert = {SETTINGS_DIR}/ca.pem")
        files = {"pip.conf": "\n".join(["[global]", *lines, ""])}
        if self.ca_bundle:
            files["ca.pem"] = self.ca_bundle
        return files


def host_pip_options() -> dict[str, str]:
    """The pip options in effect on this host (config files and PIP_* variables), pip's own view.

    `pip config list` resolves every config file and environment variable exactly as pip does;
    re-implementing its search order here would drift. No pip, no options.
    """
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    by_section: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        name, sep, quoted = line.partition("=")
        section, dot, key = name.rpartition(".")
        if sep and dot:
            by_section.setdefault(section, {})[key] = str(literal_eval(quoted))
    options: dict[str, str] = {}
    for section in _SECTIONS:
        options.update(by_section.get(section, {}))
    return options


def container_settings(options: Mapping[str, str], environ: Mapping[str, str]) -> PipSettings:
    """Keep what a container can use of the host's options; read the CA bundle they point at.

    Each value is split into whitespace-separated items and only items of the expected shape are
    kept (http(s) URLs, host names, numbers), so nothing can break out of its pip.conf line.
    """
    kept: dict[str, str] = {}
    for key, value in options.items():
        if key in _KEPT:
            target, valid = _KEPT[key]
            items = [item for item in value.split() if valid(item)]
            if items:
                kept[target] = " ".join(items)
    proxy = next((environ[var] for var in _PROXY_VARS if environ.get(var)), "")
    if "proxy" not in kept and _HTTP_URL.match(proxy):
        kept["proxy"] = proxy
    cert = options.get("cert") or next((environ[v] for v in _CA_VARS if environ.get(v)), "")
    ca_bundle = Path(cert).read_text(encoding="utf-8") if cert and Path(cert).is_file() else ""
    return PipSettings(tuple(sorted(kept.items())), ca_bundle)


def host_pip_settings() -> PipSettings:
    """The host's pip settings, as a build container should see them."""
    return container_settings(host_pip_options(), os.environ)


def redact(text: str) -> str:
    """`text` with the user:password of every URL in it masked: `https://***@host/…`."""
    return _CREDENTIALS.sub("***@", text)


class _OneShot:
    """The settings' body, handed out once, to the first request for the secret path."""

    def __init__(self, path: str, body: bytes) -> None:
        self._path = path.encode()
        self._body: bytes | None = body
        self._lock = threading.Lock()

    def take(self, path: str) -> bytes | None:
        with self._lock:
            if self._body is None or not hmac.compare_digest(path.encode(), self._path):
                return None
            body, self._body = self._body, None
            return body


def _handler(token: _OneShot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT_S  # a client that sends no request in time is dropped

        def do_GET(self) -> None:
            body = token.take(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Silent: the build's own log shows the fetch; stderr belongs to the progress view."""

    return Handler


@contextmanager
def serve(settings: PipSettings) -> Iterator[str]:
    """Serve `settings` once on 127.0.0.1 while the block runs; yield the URL ("" when there are
    none).

    docker-py builds with the classic builder, which has no build secrets: a file a layer writes
    and a build arg's value are both readable later (`docker history`). So the settings are
    served only while one build runs, and only once: the one RUN that needs them fetches them
    into a temporary folder, runs pip and deletes the folder, and a replay of the URL gets
    nothing. The URL reaches that RUN as a build arg, an environment variable there, never a
    command-line argument (any local user can read those in /proc). The build reaches loopback
    through host networking; the random path is the credential, spent by its first use. Both
    sides time out and each client has a thread of its own, so a silent client cannot hang it.
    """
    if not settings:
        yield ""
        return
    path = f"/{secrets.token_urlsafe(32)}/pip-settings.json"
    token = _OneShot(path, json.dumps(settings.files()).encode())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(token))  # daemon threads
    thread = threading.Thread(target=server.serve_forever, name="pip-settings", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
