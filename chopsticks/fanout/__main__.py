"""``python -m chopsticks.fanout``: see ``chopsticks.fanout.command``."""

import sys

from chopsticks.fanout.command import main

sys.exit(main())
