"""WeChat mode: a chat server that reads every message and censors it (docs/wechat.md).

``filters`` (sans-IO matching), ``lists`` (the YAML filter lists), ``images``
(perceptual hashes), ``directory`` (regions and groups), ``mode`` (what the
server does with a message), ``client`` (a client that sends in the clear).
"""
