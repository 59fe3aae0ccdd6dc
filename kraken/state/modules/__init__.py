"""State engine modules: each declares mutations and discoverables and performs them."""
