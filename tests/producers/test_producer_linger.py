"""The market-data producers' linger: longer on the embedded broker (each batch costs Tansu's fetches and
counts toward a rollover), Kafka's shorter, a set value wins."""

from producers.service import market_data_producer_config
from tapeflow_runtime.settings import Settings


def test_the_linger_follows_the_broker_unless_set(tmp_path):
    embedded = Settings(home=tmp_path, broker=None)
    kafka = Settings(home=tmp_path, broker="kafka:9092")
    assert market_data_producer_config(embedded) == {"linger.ms": 100}
    assert market_data_producer_config(kafka) == {"linger.ms": 25}
    assert market_data_producer_config(embedded.model_copy(update={"market_data_linger_ms": 0})) == {"linger.ms": 0}
    assert market_data_producer_config(kafka.model_copy(update={"market_data_linger_ms": 40})) == {"linger.ms": 40}
