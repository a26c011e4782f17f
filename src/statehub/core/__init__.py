"""The sans-I/O core: values, changes, views, the state dictionary, leases, locks, commands."""
