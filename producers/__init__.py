"""Exchange producers: websocket/REST market data normalised into the `md.*` topics."""
