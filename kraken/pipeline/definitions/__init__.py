"""What service and pipeline definitions are built from: mappings (templates of
expressions), input/output schemas, and the helper functions expressions may call."""
