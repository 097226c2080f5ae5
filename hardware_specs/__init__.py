"""Device specs: ``devices/*.toml`` (one file per device), the loader and the schema."""
