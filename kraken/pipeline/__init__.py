"""Flow pipelines: JSON-defined services, pipelines and routes behind an HTTP JSON API."""
