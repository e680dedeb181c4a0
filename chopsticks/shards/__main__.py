"""``python -m chopsticks.shards``: one shard process, started by a driver (``process.py``)."""

from chopsticks.shards.process import main

if __name__ == "__main__":
    main()
