"""``python -m chopsticks.fanout``: the command line, over the library's ``Group``.

``command`` runs it (hosts, group, results, exit status), ``subcommands`` turns each subcommand into
what runs on every host, ``options`` parses the arguments, ``output`` shows the results
(``folded`` with ``--fold``, ``width`` lines up their columns, ``out_dir`` writes per-host
files) and ``hosts`` expands host patterns such as ``web-[001-500]`` and folds names back.
"""
