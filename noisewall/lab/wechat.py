"""The rival on the lab's timeline: a WeChat-mode server, the keyword probe, their ground truth.

A scenario with a ``wechat`` section (:mod:`noisewall.lab.wechat_plan`) runs,
beside the E2E messenger and its censor, a server in WeChat mode whose filter
lists change on the simulated clock, and a keyword probe that measures it
every round from mainland and international accounts. The rival is not
blocked by the network censor: its probe reaches it directly (loopback).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

from noisewall.clock import Clock
from noisewall.lab.groundtruth import TruthEvent
from noisewall.lab.scenario import Scenario
from noisewall.lab.services import LabServices
from noisewall.lab.wechat_plan import WeChatPlan
from noisewall.messenger.server import ChatServer
from noisewall.messenger.wechat.filters import ImageRule, KeywordRule
from noisewall.messenger.wechat.images import perceptual_hash
from noisewall.probe.keyword import KeywordProber, KeywordSettings
from noisewall.records.endpoint import Endpoint

#: What the truth names as the rules' origin.
SOURCE = "wechat lists"
#: Seconds the keyword probe's receivers listen each round (loopback delivers in ms).
KEYWORD_WAIT = 0.4


async def start_keyword_probe(services: LabServices, scenario: Scenario, plan: WeChatPlan,
                              state: Path, clock: Clock) -> KeywordProber:
    """Start the WeChat-mode server and its keyword probe; both stop with ``services``."""
    chat = await services.enter(ChatServer(state / "wechat-server", mode="wechat",
                                           filters=plan.lists, clock=clock,
                                           listen=Endpoint("127.0.0.1", 0)))
    settings = KeywordSettings(server=chat.address, candidates=plan.candidates,
                               images=plan.images, wait=KEYWORD_WAIT, probe_asn=scenario.asn,
                               probe_cc=scenario.cc, probe_network_name=scenario.network_name)
    return await services.enter(KeywordProber(settings, state / "keyword", clock))


Match = Callable[[float], KeywordRule | ImageRule | None]


def wechat_truth(scenario: Scenario) -> list[TruthEvent]:
    """When each candidate (text or image) is filtered for mainland accounts: the lists' windows.

    International accounts are never filtered, so they have no truth event
    (anything detected there is a false alarm).
    """
    plan = scenario.wechat
    if plan is None:
        return []
    lists = plan.lists
    edges = {scenario.start}
    rules: list[KeywordRule | ImageRule] = [*lists.keywords, *lists.images]
    for rule in rules:
        for window in rule.windows:
            edges.update(t for t in (window.start, window.until)
                         if math.isfinite(t) and scenario.start < t < scenario.end)
    times = sorted(edges)
    matches: list[tuple[str, Match]] = [
        (f"keyword:{c.id}", functools.partial(lists.match_text, c.text, c.scope))
        for c in plan.candidates]
    matches += [(f"image:{i.id}", functools.partial(
        lists.match_image, perceptual_hash(i.file.read_bytes()), i.scope)) for i in plan.images]
    events: list[TruthEvent] = []
    for feature, match in matches:
        onset: float | None = None
        rule_id = ""
        for begin in times:
            hit = match(begin)
            if hit is not None and onset is None:
                onset, rule_id = begin, hit.id
            elif hit is None and onset is not None:
                events.append(TruthEvent("mainland", feature, "filtered", onset, begin, rule_id,
                                         SOURCE))
                onset = None
        if onset is not None:
            events.append(TruthEvent("mainland", feature, "filtered", onset, None, rule_id,
                                     SOURCE))
    return sorted(events, key=lambda e: (e.onset, e.vantage, e.feature))
