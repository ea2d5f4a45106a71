"""``litebox-pack run``'s native runtime: its C source, how it is built, and how it is driven."""
