"""The plumbing: wire format, ZeroMQ transport, weights store and fetch, log streams."""
