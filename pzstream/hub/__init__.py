"""The learner hub: ingest core and the parts that subscribe to accepted segments."""
