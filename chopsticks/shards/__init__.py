"""Shards: a fan-out spread over processes, each with its own gevent hub and share of the hosts.

``core.py`` is what runs inside a shard (its tunnels, kept open between fan-outs, and the runs
of jobs on them); ``driver.py`` splits a group's hosts over shards and merges their results;
``process.py`` runs a shard as a local process. A ``Group(hosts, workers=N)`` drives them.
"""
