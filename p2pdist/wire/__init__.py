"""The peer wire protocol (BEP 3, 6, 10): message codec, sans-IO connection state, block fetching."""
