"""REST compatibility shims (spec §6): request JSON -> service call -> spec JSON."""
