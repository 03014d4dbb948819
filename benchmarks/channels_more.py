"""Discord and Matrix channels, side by side with their floor, in one run.

    .venv/bin/python benchmarks/channels_more.py [--runs N] [--json PATH]

* floor: ``Assistant.send`` called directly for a one-line answer of the scripted model (the
  OpenAI wire protocol on 127.0.0.1): the turn itself, no channel.
* discord: from a MESSAGE_CREATE dispatch handed to discord.py's parser (what its gateway does)
  to the fake Discord REST API receiving the answer's ``POST /channels/{id}/messages``: the
  library's parsing, the allowlist, screening, the ``channel.message`` audit entry (fsync'd),
  the turn, the answer's REST call.
* matrix: from a message put into the fake homeserver's next ``/sync`` to it receiving the
  answer's ``PUT /rooms/{room}/send/...``: the long-poll wake-up, nio's parsing, the same
  channel work, the answer's send.

The difference is what the channel adds. No target is set by the issue; the number is printed
beside the floor with the ratio. Writes JSON to benchmarks/results/channels_more.json.
(Telegram and Slack: benchmarks/channels.py.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import REPO, channel_bench_main, summary

from closedpaw.channels.discord import DiscordAdapter
from closedpaw.channels.matrix import MatrixAdapter
from closedpaw.security import Principal
from closedpaw.settings import ChannelConfig
from tests.channels.fake_discord import FakeDiscord
from tests.channels.fake_matrix import FakeMatrix
from tests.channels.rig import channel_rig
from tests.provider_servers import Reply

DEFAULT_JSON = REPO / "benchmarks" / "results" / "channels_more.json"
USER = "310000000000000042"
MXUSER = "@bench:fake.test"
ROOM = "!bench:fake.test"


def _wait(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.002)
    raise RuntimeError(f"timed out waiting for {what}")


def _cfg(kind: str, allow: str) -> ChannelConfig:
    opts = {"homeserver": "http://127.0.0.1:9", "user_id": "@closedpaw:fake.test"} \
        if kind == "matrix" else {}
    return ChannelConfig.parse({"name": "b", "type": kind, "token": "secret:T",
                                "allow": [allow], "options": opts}, "bench")


def discord_run(runs: int, tmp: Path) -> dict[str, Any]:
    import discord.http

    fake = FakeDiscord()
    base = discord.http.Route.BASE
    floor: list[float] = []
    channel: list[float] = []
    try:
        fake.add_user(USER, "bench", "Bench")
        dm = fake.dm_channel(USER)
        ad = DiscordAdapter("b", fake.token, api_base=fake.base, gateway=False)
        with channel_rig(tmp / "dc", _cfg("discord", USER), ad) as rig:
            assert ad.client is not None
            parse = ad.client._connection.parsers["MESSAGE_CREATE"]

            def say(text: str) -> None:
                rig.loop.call_soon_threadsafe(parse, fake.message_create(USER, text))
            rig.model.script = [Reply(text="warm")]
            say("warm up")
            _wait(lambda: fake.in_channel(dm), "warm-up")
            p = Principal(f"b-{USER}", "user")
            conv = rig.assistant.create(p).id
            for i in range(runs):
                rig.model.script = [Reply(text=f"direct {i}")]
                t0 = time.perf_counter()
                rig.assistant.send(p, conv, f"question {i}")
                floor.append((time.perf_counter() - t0) * 1000)
                n = len(fake.in_channel(dm))
                rig.model.script = [Reply(text=f"answer {i}")]
                t0m = time.monotonic()
                say(f"question {i}")
                _wait(lambda n=n: len(fake.in_channel(dm)) > n, "the answer")
                sent = max(r.at for r in fake.hits("POST", f"/channels/{dm}/messages"))
                channel.append((sent - t0m) * 1000)
    finally:
        discord.http.Route.BASE = base
        fake.close()
    return {"floor_assistant_send": summary(floor), "discord": summary(channel)}


def matrix_run(runs: int, tmp: Path) -> dict[str, Any]:
    fake = FakeMatrix()
    out: list[float] = []
    try:
        fake.room(ROOM, (MXUSER, "Bench"))
        ad = MatrixAdapter("b", fake.token, homeserver=fake.url, user_id=fake.bot,
                           sync_timeout_ms=30_000)
        with channel_rig(tmp / "mx", _cfg("matrix", MXUSER), ad) as rig:
            rig.model.script = [Reply(text="warm")]
            fake.say(ROOM, MXUSER, "warm up")
            _wait(lambda: fake.messages(ROOM), "warm-up")
            for i in range(runs):
                n = len(fake.messages(ROOM))
                rig.model.script = [Reply(text=f"answer {i}")]
                t0m = time.monotonic()
                fake.say(ROOM, MXUSER, f"question {i}")
                _wait(lambda n=n: len(fake.messages(ROOM)) > n, "the answer")
                sent = max(r.at for r in fake.hits("PUT", f"/rooms/{ROOM}/send/"))
                out.append((sent - t0m) * 1000)
    finally:
        fake.close()
    return {"matrix": summary(out)}


def main() -> int:
    return channel_bench_main(DEFAULT_JSON, "closedpaw-bench-ch2-",
                              [("discord", discord_run), ("matrix", matrix_run)])


if __name__ == "__main__":
    sys.exit(main())
