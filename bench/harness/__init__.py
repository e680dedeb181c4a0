"""The benchmarks' shared harness: stdlib only, any Python 3 (it runs in the project venv,
the peers venv and the system ``python3``).

Imported as ``harness`` with no ``sys.path`` edit: every script in ``bench/`` has ``bench/``
on its path as the directory of the script, and the peer scripts in ``bench/peers/`` are
started by their runners with ``PYTHONPATH=bench/`` (``runner.peers_env()``).

* ``procfs``: everything read from /proc (CPU per thread, process trees, memory);
* ``runner``: the loopback fleet, the peers' interpreter and environment, results files;
* ``w1``: W1's arguments, timing, statistics and output, and the container helpers;
* ``w2``, ``w2threads``: the W2 child's lock-step protocol, and thread-per-host fan-out;
* ``w3``: the W3 child's command line.
"""
