"""Binance USD-M futures: frame parsing, order-book synchronisation, and the producer that wires them to Kafka."""
