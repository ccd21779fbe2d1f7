"""``noisewall bench``: every benchmark, next to its baseline in the same run.

One module per area (noise, messenger, censor, tunnel, observatory, lab) and
the kit they share (:mod:`noisewall.bench.kit`: the result line, the machine,
helper processes). Nothing outside this package and the CLI imports it, so the
product packages carry no benchmark code.
"""
