"""The ``keyword`` probe: which keyword combinations (and images) a WeChat-style server drops.

Per region (``mainland``, ``international``) the probe holds a sender and a
receiver account, registered from that region, and a group of the two. Each
round, in each scope it tests (one to one, group), the sender sends a
**control** message with no sensitive terms and one message per candidate
combination (or image); the receiver listens for ``wait`` seconds. A
candidate that did not arrive while the control did was filtered by the
server; a round whose control did not arrive says nothing about the lists
(the network, or the server, failed), and is recorded as such.

One OONI-format measurement per round and region (test name
``noisewall_keyword_filtering``, the region as the vantage annotation)::

    "test_keys": {"region": "mainland", "failure": null,
                  "control": {"one_to_one": true, "group": true},
                  "combinations": {"lawyer": {"scope": "one_to_one", "arrived": false}},
                  "images": {"banner": {"scope": "group", "arrived": true}}}
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from noisewall.clock import Clock, SystemClock
from noisewall.messenger import payloads
from noisewall.messenger.connection import ChatError
from noisewall.messenger.wechat.client import WeChatClient
from noisewall.messenger.wechat.directory import REGIONS, Region
from noisewall.noise import NoiseError, dh_function
from noisewall.noise.keys import load_or_create_private_key
from noisewall.probe.failures import failure_string
from noisewall.probe.lifecycle import Started
from noisewall.probe.measurement import MeasurementMeta, ooni_record, report_id
from noisewall.records.endpoint import Endpoint
from noisewall.records.keyword import SCOPES, TEST_NAME, TEST_VERSION, Scope

_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeywordCandidate(_Settings):
    """A test message: a candidate combination written out as a sentence, in one scope."""

    id: str = Field(pattern=_ID)
    text: str = Field(min_length=1, max_length=4096)
    scope: Scope = "one_to_one"


class ImageCandidate(_Settings):
    """A test image (a file), in one scope."""

    id: str = Field(pattern=_ID)
    file: Path
    scope: Scope = "one_to_one"


class KeywordSettings(_Settings):
    """What the keyword probe sends, from which regions, to which server."""

    server: Endpoint
    candidates: tuple[KeywordCandidate, ...] = ()
    images: tuple[ImageCandidate, ...] = ()
    control: str = Field(default="see you at the station at six", min_length=1)
    regions: tuple[Region, ...] = REGIONS
    wait: float = Field(default=1.0, gt=0, le=60)
    timeout: float = Field(default=5.0, gt=0, le=120)
    socks5: Endpoint | None = None
    account_prefix: str = Field(default="kw", pattern=r"^[a-z0-9][a-z0-9-]{0,11}$")
    probe_asn: str = Field(default="AS0", pattern=r"^AS[0-9]+$")
    probe_cc: str = Field(default="ZZ", pattern=r"^[A-Z]{2}$")
    probe_ip: str = "127.0.0.1"
    probe_network_name: str | None = None

    def scopes(self) -> list[Scope]:
        """The scopes some candidate is tested in (each gets its own control)."""
        used = {c.scope for c in self.candidates} | {i.scope for i in self.images}
        return [scope for scope in SCOPES if scope in used]


class _Region:
    """A region's sender, receiver and group."""

    def __init__(self, region: Region, sender: WeChatClient, receiver: WeChatClient,
                 group: str) -> None:
        self.region = region
        self.sender = sender
        self.receiver = receiver
        self.group = group


class KeywordProber(Started):
    """Runs keyword rounds; keys live in ``state_dir`` so accounts survive restarts."""

    def __init__(self, settings: KeywordSettings, state_dir: Path,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.clock: Clock = clock or SystemClock()
        self._regions: list[_Region] = []
        self._images = {image.id: image.file.read_bytes() for image in settings.images}
        self._meta: MeasurementMeta | None = None

    async def _account(self, region: Region, role: str) -> WeChatClient:
        s = self.settings
        name = f"{s.account_prefix}-{region}-{role}"
        key = load_or_create_private_key(self.state_dir / f"{name}.key", dh_function("25519"))
        return await WeChatClient.open(*s.server, key, name, region, socks5=s.socks5,
                                       timeout=s.timeout, clock=self.clock)

    async def start(self) -> None:
        """Register (or reconnect) the accounts and make the groups."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for region in self.settings.regions:
            sender = await self._account(region, "s")
            receiver = await self._account(region, "r")
            group = f"{self.settings.account_prefix}-{region}-g"
            try:
                await sender.create_group(group)
            except ChatError as exc:
                if exc.code != "name_taken":
                    raise
            await sender.add_member(group, receiver.name)
            self._regions.append(_Region(region, sender, receiver, group))
        s = self.settings
        now = self.clock.now()
        self._meta = MeasurementMeta(report_id(now, s.probe_asn), now, s.probe_asn, s.probe_cc,
                                     s.probe_ip, s.probe_network_name)

    async def close(self) -> None:
        """Disconnect every account."""
        for region in self._regions:
            await region.sender.close()
            await region.receiver.close()
        self._regions.clear()

    async def run_round(self, round_no: int) -> list[dict[str, Any]]:
        """Test every candidate from every region now; one measurement per region."""
        if self._meta is None:
            raise RuntimeError("start the keyword prober first (async with KeywordProber(...))")
        start = self.clock.now()
        began = time.monotonic()
        keys = await asyncio.gather(*(self._measure(region) for region in self._regions))
        runtime = time.monotonic() - began
        return [ooni_record(self._meta, vantage=region.region, round_no=round_no, start=start,
                            runtime=runtime, test_name=TEST_NAME, test_version=TEST_VERSION,
                            test_keys=test_keys)
                for region, test_keys in zip(self._regions, keys, strict=True)]

    async def _measure(self, region: _Region) -> dict[str, Any]:
        s = self.settings
        sent: dict[str, tuple[str, str]] = {}  # msg id -> (section, id)
        keys: dict[str, Any] = {
            "region": region.region, "failure": None,
            "control": dict.fromkeys(s.scopes(), False),
            "combinations": {c.id: {"scope": c.scope, "arrived": None} for c in s.candidates},
            "images": {i.id: {"scope": i.scope, "arrived": None} for i in s.images},
        }

        async def send(scope: Scope, payload: dict[str, Any]) -> str:
            if scope == "group":
                return await region.sender.send_group(region.group, payload, s.timeout)
            return await region.sender.send(region.receiver.name, payload, s.timeout)

        try:
            for scope in s.scopes():
                sent[await send(scope, payloads.text(s.control))] = ("control", scope)
            for candidate in s.candidates:
                msg_id = await send(candidate.scope, payloads.text(candidate.text))
                sent[msg_id] = ("combinations", candidate.id)
            for image in s.images:
                msg_id = await send(image.scope,
                                    payloads.image(self._images[image.id], image.file.name))
                sent[msg_id] = ("images", image.id)
            arrived = {str(m.payload["id"]) for m in await region.receiver.receive(s.wait)}
            await region.sender.receive(0.01)  # take the receipts, so they do not pile up
        except (ChatError, NoiseError, OSError, TimeoutError) as exc:
            keys["failure"] = failure_string(exc)
            return keys
        for msg_id, (section, item) in sent.items():
            if section == "control":
                keys["control"][item] = msg_id in arrived
            else:
                keys[section][item]["arrived"] = msg_id in arrived
        return keys
