"""One module per protocol classifier; each exposes ``inspect(data) -> InspectResult``."""
