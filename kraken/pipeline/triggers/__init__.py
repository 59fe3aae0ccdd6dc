"""Triggers: what feeds pipelines besides the HTTP API (kraken-pubsub topics, cron schedules,
signed webhooks), and where their results may be published (kraken-pubsub topics)."""
