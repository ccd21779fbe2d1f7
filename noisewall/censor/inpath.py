"""The censor in the path of a lab network (``noisewall censor --net NAME``).

The censor process runs in the network's border namespace (the caller enters
it before starting the event loop, so every socket, the server connections
included, belongs to the border). :class:`InPath` binds the transparent
listener and the DNS forger on the border's inside address, installs the
censor's nftables table (:mod:`.nftables`) that turns the users' flows to
them, logs the kernel's decisions on UDP flows as they appear, reinstalls
the UDP rules when the policy is reloaded, and removes the table on the
way out, whatever the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from noisewall.cancellation import cancel_and_wait
from noisewall.censor import nftables
from noisewall.censor.arrival.dns import DnsForger
from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.middlebox import Middlebox
from noisewall.censor.policy import ALLOW, Decision, Policy
from noisewall.net import NetError, Network, tools
from noisewall.records.endpoint import Endpoint

log = logging.getLogger("noisewall.censor")

#: Seconds between two reads of the UDP flow sets.
UDP_POLL_INTERVAL = 0.5
DNS_PORT = 53


class InPath:
    """Holds the border's redirects to ``middlebox`` while entered."""

    def __init__(self, network: Network, middlebox: Middlebox, policy: Callable[[], Policy],
                 poll_interval: float = UDP_POLL_INTERVAL) -> None:
        self.network = network
        self._middlebox = middlebox
        self._policy = policy
        self._poll_interval = poll_interval
        self._forger: DnsForger | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.redirects: nftables.Redirects | None = None

    async def __aenter__(self) -> InPath:
        tools.tool("nft")
        address = str(self.network.border_inside.address.ip)
        tcp = await self._middlebox.add_transparent(Endpoint(address, 0))
        forger = DnsForger(Endpoint(str(self.network.resolver), DNS_PORT), self._middlebox.decide)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: forger, local_addr=(address, 0))
        self._forger = forger
        dns_port = int(transport.get_extra_info("sockname")[1])
        self.redirects = nftables.Redirects(
            self.network.border_inside.interface, tcp.port, dns_port)
        try:
            policy = self._install()
        except BaseException:
            await self._remove()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch_udp(policy))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._remove()

    async def _remove(self) -> None:
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        try:
            tools.run("nft", "-f", "-", stdin=nftables.removal())
        except NetError as exc:
            log.error("could not remove the censor's nftables table: %s", exc)
        if self._forger is not None:
            await self._forger.close()

    def _install(self) -> Policy:
        assert self.redirects is not None
        policy = self._policy()
        tools.run("nft", "-f", "-", stdin=nftables.ruleset(self.redirects, policy))
        return policy

    async def _watch_udp(self, installed: Policy) -> None:
        seen: set[nftables.UdpFlow] = set()
        while True:
            await asyncio.sleep(self._poll_interval)
            if self._policy() is not installed:
                try:
                    installed = self._install()
                except NetError as exc:
                    log.error("could not install the reloaded policy's UDP rules: %s", exc)
                    continue
                seen = set()
            try:
                listing = tools.run("nft", "-j", "list", "table", nftables.FAMILY, nftables.TABLE)
            except NetError as exc:
                log.error("cannot read the UDP flows: %s", exc)
                continue
            current = nftables.parse_sets(listing)
            for flow in current - seen:
                self._log_udp(flow, installed)
            seen = current

    def _log_udp(self, flow: nftables.UdpFlow, policy: Policy) -> None:
        rules = nftables.udp_rules(policy)
        decision = Decision(None, ALLOW)
        for index, rule in enumerate(rules):
            if nftables.set_name(index) == flow.set:
                decision = Decision(rule.name, rule.action)
        record = FlowRecord(flow.client, flow.server, transport="udp")
        self._middlebox.record_decision(record, decision)
