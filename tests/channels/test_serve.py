"""``closedpaw serve`` with a channels file: the app's lifespan starts the Telegram channel
(token from a secret reference), and ``closedpaw channels ...`` manages pairing over the API:
a stranger asks for a code in the chat, the admin approves it with the CLI, the person chats."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import closedpaw
from closedpaw.api import create_app
from closedpaw.gate import Gate
from closedpaw.providers import Gateway, OpenAIConfig
from closedpaw.settings import Settings
from tests.channels.fake_telegram import FakeTelegram
from tests.conftest import TEST_CGROUP, TEST_STATE
from tests.integration.conftest import wait_for
from tests.provider_servers import ProviderServer, Reply

TOKEN = "4242:serve-token"
SRC = str(Path(closedpaw.__file__).parents[1])


@contextlib.contextmanager
def served(tmp_path: Path, fake: FakeTelegram) -> Iterator[tuple[str, Settings, Any]]:
    import uvicorn

    chans = tmp_path / "channels.yaml"
    chans.write_text("channels:\n  - name: tg\n    type: telegram\n"
                     "    token: secret:TG_TOKEN\n    allow: []\n"
                     f"    options: {{base_url: '{fake.base_url}', poll_timeout_s: 1}}\n")
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP,
                    channels_file=chans)
    s = dataclasses.replace(s, secret_env={"TG_TOKEN": TOKEN})
    model = ProviderServer("openai")
    gate = Gate(s)
    gw = Gateway([OpenAIConfig(name="scripted", base_url=f"{model.url}/v1",
                               model="scripted-model", timeout_s=30)], default="scripted")
    app = create_app(s, gate=gate, providers=gw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none",
                                           http="h11", timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        wait_for(lambda: server.started or not t.is_alive(), "the server to start")
        assert server.started
        app.state.model = model
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", s, app
    finally:
        server.should_exit = True
        t.join(timeout=30)
        sock.close()
        gate.close()
        gw.close()
        model.close()


def cli(url: str, token_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "closedpaw.cli.main", *args, "--url", url,
                           "--token-file", str(token_file)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_serve_starts_the_channel_and_the_cli_pairs_a_stranger(tmp_path: Path) -> None:
    fake = FakeTelegram(TOKEN)
    try:
        with served(tmp_path, fake) as (url, s, app):
            admin = s.token_file
            out = cli(url, admin, "channels", "list", "--json")
            assert out.returncode == 0, out.stderr
            [ch] = json.loads(out.stdout)
            assert ch["name"] == "tg" and ch["running"] and ch["token"] == "secret:TG_TOKEN"
            assert TOKEN not in out.stdout
            assert cli(url, admin, "channels", "status").returncode == 0
            # the empty allowlist lets nobody in; the stranger asks for a code
            fake.say(7007, "hello")
            fake.say(7007, "/pair", name="Newcomer")
            text = fake.wait(lambda: next((t for t in fake.texts(7007) if "code is" in t),
                                          None), "the code")
            code = text.split("code is ")[1][:8]
            listed = cli(url, admin, "channels", "pair", "list", "--json")
            [req] = json.loads(listed.stdout)["pending"]
            assert req["user"] == "7007" and code not in listed.stdout
            # a user token may not approve
            gate: Gate = app.state.gate
            user_tok = tmp_path / "user.tok"
            user_tok.write_text(gate.create_principal("someone", "user") + "\n")
            denied = cli(url, user_tok, "channels", "pair", "approve", code)
            assert denied.returncode != 0 and "admin" in denied.stderr
            ok = cli(url, admin, "channels", "pair", "approve", code)
            assert ok.returncode == 0, ok.stderr
            assert "role user" in ok.stdout
            again = cli(url, admin, "channels", "pair", "approve", code)
            assert again.returncode != 0 and "pairing_refused" in again.stderr
            app.state.model.script = [Reply(text="Welcome aboard.")]
            fake.say(7007, "hi again")
            fake.wait(lambda: "Welcome aboard." in fake.texts(7007), "the answer")
            gone = cli(url, admin, "channels", "pair", "revoke", "7007", "--channel", "tg")
            assert gone.returncode == 0, gone.stderr
            assert gate.role_of("tg-7007") == ""
    finally:
        fake.close()


def test_a_bad_channels_file_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    import pytest

    from closedpaw.errors import ConfigError

    chans = tmp_path / "channels.yaml"
    chans.write_text("channels:\n  - {name: tg, type: telegram, token: '123:plain'}\n")
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP,
                    channels_file=chans)
    with pytest.raises(ConfigError, match="secret:NAME"):
        s.channels.load()
