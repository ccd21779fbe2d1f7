"""``noisewall bench noise``: handshake rate and transport throughput against baselines.

Every figure is measured next to its baseline in the same run, in alternating
rounds, and the best round of each is kept, so a noisy shared machine shifts
both sides alike and the ratio stays meaningful.

* Handshakes: complete XX and IK handshakes (both parties in this process) per
  second; the baseline is the raw X25519 work alone (the key generations and
  DH operations the same handshake needs), the floor no implementation can beat.
* Transport: Noise ``CipherState.encrypt`` and a full NoiseSocket send
  (encrypt + frame, and taking the frame as :class:`NoiseStream` does) on
  100-byte and maximal (65517-byte) messages, against
  the raw ``cryptography`` AESGCM ``encrypt`` on the same data with
  precomputed nonces.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from noisewall.bench.kit import BenchResult
from noisewall.noise.handshakestate import HandshakeState
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.protocol import parse_protocol_name
from noisewall.noise.settings import NoiseSettings

SUITE = "25519_AESGCM_SHA256"
LARGE = 65517  # the largest body one NoiseSocket transport message carries


def _best_rate(run: Callable[[int], None], count: int, rounds: int) -> float:
    """Operations per second of the fastest of ``rounds`` runs of ``count`` operations."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(count)
        best = min(best, time.perf_counter() - start)
    return count / best


def _paired(
    ours: Callable[[int], None], base: Callable[[int], None], count: int, rounds: int
) -> tuple[float, float]:
    """Best rates of two workloads measured in alternating rounds."""
    ours_best = base_best = 0.0
    for _ in range(rounds):
        ours_best = max(ours_best, _best_rate(ours, count, 1))
        base_best = max(base_best, _best_rate(base, count, 1))
    return ours_best, base_best


def _handshake_runner(pattern: str) -> Callable[[int], None]:
    protocol = parse_protocol_name(f"Noise_{pattern}_{SUITE}")
    dh = protocol.dh
    client, server = dh.generate_keypair(), dh.generate_keypair()
    needs_rs = "s" in protocol.pattern.responder_pre

    def run(count: int) -> None:
        for _ in range(count):
            initiator = HandshakeState(
                protocol, True, s=client, rs=server.public if needs_rs else None
            )
            responder = HandshakeState(protocol, False, s=server)
            sender, receiver = initiator, responder
            while not initiator.complete:
                receiver.read_message(sender.write_message(b""))
                sender, receiver = receiver, sender

    return run


def _dh_floor_runner(pattern: str) -> Callable[[int], None]:
    # The X25519 operations one handshake of this pattern performs, and nothing else.
    protocol = parse_protocol_name(f"Noise_{pattern}_{SUITE}")
    dh = protocol.dh
    messages = protocol.pattern.messages
    dh_ops = sum(token in ("ee", "es", "se", "ss") for message in messages for token in message)
    keygens = sum(message.count("e") for message in messages)
    peer = dh.generate_keypair()

    def run(count: int) -> None:
        for _ in range(count):
            for _ in range(keygens):
                dh.generate_keypair()
            for _ in range(2 * dh_ops):  # both parties compute every DH
                dh.dh(peer, peer.public)

    return run


def _transport_runners(size: int) -> dict[str, Callable[[int], None]]:
    key = os.urandom(32)
    data = os.urandom(size)
    aead = AESGCM(key)
    settings = NoiseSettings(protocol=f"Noise_NN_{SUITE}")
    initiator = NoiseSocketConnection(True, settings)
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=f"Noise_NN_{SUITE}"))
    while not initiator.handshake_complete:
        sender = initiator if initiator.needs_write else responder
        receiver = responder if sender is initiator else initiator
        sender.send_handshake()
        receiver.receive_data(sender.data_to_send())
    cipher = initiator.transport.send
    assert cipher is not None
    body = data[: min(size, initiator.max_body)]

    def raw(count: int) -> None:
        nonces = [b"\x00\x00\x00\x00" + n.to_bytes(8, "big") for n in range(count)]
        encrypt = aead.encrypt
        for nonce in nonces:
            encrypt(nonce, data, b"")

    def cipherstate(count: int) -> None:
        encrypt = cipher.encrypt
        for _ in range(count):
            encrypt(data)

    def noisesocket(count: int) -> None:
        send, drain = initiator.send_message, initiator.take_outgoing
        for _ in range(count):
            send(body)
            drain()

    return {"raw": raw, "cipherstate": cipherstate, "noisesocket": noisesocket}


def run_noise_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Run every noise benchmark; ``quick`` shrinks the work for smoke tests."""
    rounds = 2 if quick else 5
    results: list[BenchResult] = []
    for pattern in ("XX", "IK"):
        count = 20 if quick else 400
        ours, floor = _paired(
            _handshake_runner(pattern), _dh_floor_runner(pattern), count, rounds
        )
        results.append(
            BenchResult(f"{pattern} handshakes ({SUITE})", "handshakes/s", ours,
                        "raw X25519 work of one handshake", floor)
        )
    for size, count in ((100, 200 if quick else 100_000), (LARGE, 20 if quick else 3000)):
        runners = _transport_runners(size)
        for layer in ("cipherstate", "noisesocket"):
            ours, raw = _paired(runners[layer], runners["raw"], count, rounds)
            results.append(
                BenchResult(f"{layer} encrypt {size} B", "MB/s", ours * size / 1e6,
                            "raw cryptography AESGCM", raw * size / 1e6)
            )
    return results
