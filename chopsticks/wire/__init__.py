"""The wire: what crosses the pipe between the controller and an agent, for both ends.

Everything under this package is remote-safe (standard library only, Python 3.9
syntax): the agent runs it as it is, and the controller imports the same modules.
"""
