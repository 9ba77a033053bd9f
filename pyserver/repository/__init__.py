"""The model repository: store scan, config load, normalise and validate, version policy."""
