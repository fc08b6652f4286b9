"""RFC 5261 patches: operations, the diff engine and the applier."""
