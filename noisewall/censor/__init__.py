"""The censor: a GFW-style DPI middlebox (classify flows, apply a policy, act on them)."""
