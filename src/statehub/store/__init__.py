"""Where committed state lives. The store owns the atomic step: check leases, apply, number."""
