"""The market-data producers' linger: 25 ms whichever Kafka the stack uses, a set value wins."""

from producers.service import market_data_producer_config
from tapeflow_runtime.settings import Settings


def test_the_linger_is_the_same_on_every_broker_unless_set(tmp_path):
    embedded = Settings(home=tmp_path, broker=None)
    external = Settings(home=tmp_path, broker="kafka:9092")
    assert market_data_producer_config(embedded) == {"linger.ms": 25}
    assert market_data_producer_config(external) == {"linger.ms": 25}
    assert market_data_producer_config(embedded.model_copy(update={"market_data_linger_ms": 0})) == {"linger.ms": 0}
    assert market_data_producer_config(external.model_copy(update={"market_data_linger_ms": 40})) == {"linger.ms": 40}
