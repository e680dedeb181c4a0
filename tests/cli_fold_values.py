"""What the folded-output tests have hosts return: results that differ by the order hosts arrive
in, so that counts are known though which host gets which is not. Called through
``python -m chopsticks.fanout call``; the remote imports this module on demand."""

import os


def arrival(directory):
    """1 for the first caller across hosts sharing ``directory``, 2 for the next, and so on."""
    number = 1
    while True:
        try:
            os.mkdir(os.path.join(directory, str(number)))
            return number
        except FileExistsError:
            number += 1


def sorted_into(directory, failing, small):
    """The first ``failing`` callers raise, the next ``small`` return 'small', the rest 'big'."""
    number = arrival(directory)
    if number <= failing:
        raise ValueError("no luck")
    return "small" if number <= failing + small else "big"
