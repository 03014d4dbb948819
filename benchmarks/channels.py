"""Chat channels, side by side with their floor, in one run.

    .venv/bin/python benchmarks/channels.py [--runs N] [--json PATH]

* floor: ``Assistant.send`` called directly for a one-line answer of the scripted model (the
  OpenAI wire protocol on 127.0.0.1): the turn itself, no channel.
* telegram: from the update being available to the long-polled ``getUpdates`` of a fake Bot
  API server to that server receiving the answer's ``sendMessage``: python-telegram-bot's
  polling and parsing, the allowlist, screening, the ``channel.message`` audit entry (fsync'd),
  the turn, the answer's Bot API call.
* slack: from a signed Events API request to the fake Slack receiving ``chat.postMessage``.

The difference is what the channel adds. No target is set by the issue; the number is printed
beside the floor with the ratio. Writes JSON to benchmarks/results/channels.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import REPO, channel_bench_main, summary

from closedpaw.channels.slack import SlackAdapter
from closedpaw.channels.telegram import TelegramAdapter
from closedpaw.security import Principal
from closedpaw.settings import ChannelConfig
from tests.channels.fake_slack import TEAM, FakeSlack
from tests.channels.fake_telegram import FakeTelegram
from tests.channels.rig import channel_rig
from tests.provider_servers import Reply

DEFAULT_JSON = REPO / "benchmarks" / "results" / "channels.json"


def _cfg(kind: str, allow: str) -> ChannelConfig:
    opts = {"signing_secret": "secret:S"} if kind == "slack" else {}
    return ChannelConfig.parse({"name": "b", "type": kind, "token": "secret:T",
                                "allow": [allow], "options": opts}, "bench")


def telegram(runs: int, tmp: Path) -> dict[str, Any]:
    fake = FakeTelegram("1:bench")
    floor: list[float] = []
    channel: list[float] = []
    try:
        ad = TelegramAdapter("b", "1:bench", base_url=fake.base_url, poll_timeout_s=5)
        with channel_rig(tmp / "tg", _cfg("telegram", "42"), ad) as rig:
            p = Principal("b-42", "user")
            rig.model.script = [Reply(text="warm")]
            fake.say(42, "warm up")
            fake.wait(lambda: fake.texts(42), "warm-up")
            conv = rig.assistant.create(p).id
            for i in range(runs):
                rig.model.script = [Reply(text=f"direct {i}")]
                t0 = time.perf_counter()
                rig.assistant.send(p, conv, f"question {i}")
                floor.append((time.perf_counter() - t0) * 1000)
                n = len(fake.texts(42))
                rig.model.script = [Reply(text=f"answer {i}")]
                t0m = time.monotonic()
                fake.say(42, f"question {i}")
                fake.wait(lambda n=n: len(fake.texts(42)) > n, "the answer")
                sent = max(c.at for c in fake.of("sendMessage"))
                channel.append((sent - t0m) * 1000)
    finally:
        fake.close()
    return {"floor_assistant_send": summary(floor), "telegram": summary(channel)}


def slack(runs: int, tmp: Path) -> dict[str, Any]:
    fake = FakeSlack("xoxb-b", "sig")
    out: list[float] = []
    try:
        ad = SlackAdapter("b", "xoxb-b", "sig", base_url=fake.base_url, listen_port=0)
        with channel_rig(tmp / "sl", _cfg("slack", f"{TEAM}/U42"), ad) as rig:
            rig.model.script = [Reply(text="warm")]
            fake.say(ad.url, "U42", "warm up")
            fake.wait(lambda: fake.texts("DU42"), "warm-up")
            for i in range(runs):
                n = len(fake.texts("DU42"))
                rig.model.script = [Reply(text=f"answer {i}")]
                t0m = time.monotonic()
                fake.say(ad.url, "U42", f"question {i}")
                fake.wait(lambda n=n: len(fake.texts("DU42")) > n, "the answer")
                sent = max(c.at for c in fake.of("chat.postMessage"))
                out.append((sent - t0m) * 1000)
    finally:
        fake.close()
    return {"slack": summary(out)}


def main() -> int:
    return channel_bench_main(DEFAULT_JSON, "closedpaw-bench-ch-",
                              [("telegram", telegram), ("slack", slack)])


if __name__ == "__main__":
    sys.exit(main())
