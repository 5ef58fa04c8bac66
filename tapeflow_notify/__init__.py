"""Alerts to people: signals, fills, closed positions and risk events sent to Telegram, Discord or a webhook.

A service of its own (`tapeflow notify`) that reads the executor's and engine's output topics with its
own consumer group, so a slow or failing chat service can never hold back the pipeline. Secrets
(bot token, webhook URLs) come from the settings (environment or `*_FILE`) and are never logged.
"""
