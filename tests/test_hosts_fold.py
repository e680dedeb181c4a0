"""Folding host names back into ranges (``hosts.fold``), tested with its inverse ``hosts.expand``
(pure logic)."""

import random

import pytest

from chopsticks.fanout.hosts import expand, fold


def expanded(patterns):
    return [name for pattern in patterns for name in expand(pattern)]


@pytest.mark.parametrize("pattern", [
    "web-[001-480,482]",
    "web-[1-3]",
    "db-[1,3,5-6]",
    "n[08-10]",
    "n[098-101]",
    "host[0-12].example.com",
    "deploy@web-[1-2]:2222",
    "[::1]:[2222-2223]",
    "10.0.[1-3].[1-254]",
    "rack[1-2]-node[01-03]",
])
def test_fold_gives_back_the_pattern_expand_read(pattern):
    """A pattern in fold's own form expands and folds back to itself, padding and lists included."""
    assert fold(expand(pattern)) == [pattern]


def test_the_last_varying_number_folds_first_then_earlier_ones_where_complete():
    """Several numbers: the last that varies folds; an earlier one only where every combination is there."""
    assert fold(["a1-b1", "a1-b2", "a2-b1"]) == ["a1-b[1-2]", "a2-b1"]
    assert fold(["node1-eth0", "node2-eth0", "node3-eth0"]) == ["node[1-3]-eth0"]
    assert fold(expand("r[1-2]-n[1-3]") + ["r3-n1"]) == ["r[1-2]-n[1-3]", "r3-n1"]


def test_mixed_widths_stay_exact():
    """01 and 1 are different names: each keeps its own width; 10 joins a run of 2-digit padding."""
    names = ["n8", "n08", "n9", "n09", "n10", "n010"]
    assert sorted(expanded(fold(names))) == sorted(names)
    assert fold(["n08", "n09", "n10", "n11"]) == ["n[08-11]"]
    assert fold(["n1", "n01"]) == ["n[1,01]"]


def test_names_without_numbers_and_bare_ipv6_stay_as_they_are_in_order():
    """No number, or a bare IPv6 address (hex groups are not counters): unfolded, in the names' order."""
    names = ["db", "web-2", "fe80::1", "fe80::2", "web-1", "cache"]
    assert fold(names) == ["db", "web-[1-2]", "fe80::1", "fe80::2", "cache"]
    assert fold(["root@[fe80::1]", "root@[fe80::2]"]) == ["root@[fe80::1]", "root@[fe80::2]"]


def test_duplicates_count_once_and_container_names_fold():
    """A name given twice is folded once; 'HOST -> NAME' (--container results) folds on the host's number."""
    assert fold(["a1", "a2", "a1"]) == ["a[1-2]"]
    assert fold(["web-1 -> app", "web-2 -> app"]) == ["web-[1-2] -> app"]


def test_a_name_that_is_not_its_own_pattern_is_left_alone():
    """A name with brackets expand would read (never one it made) is shown as it is, not folded."""
    assert fold(["a[1]", "a1", "a2"]) == ["a[1]", "a[1-2]"]


def _random_name(rng):
    number = str(rng.randrange(0, 130))
    if rng.random() < 0.3:
        number = number.zfill(rng.choice([2, 3]))
    second = str(rng.randrange(0, 4)).zfill(rng.choice([1, 1, 2]))
    return rng.choice([
        "web-%s" % number, "web-%s.example.com" % number, "10.0.%s.%s" % (second, number),
        "rack%s-n%s" % (second, number), "[::1]:%s" % number, "fe80::%s" % number, "user@db%s:22" % number,
        "h%s -> app" % number, "plain", "x%sy%sz" % (number, second), "%s" % number,
    ])


def test_expand_of_fold_is_the_same_names_for_random_lists():
    """Property, over 500 seeded random lists of mixed shapes: expand(fold(names)) is names as a set, each once."""
    for seed in range(500):
        rng = random.Random(seed)
        names = [_random_name(rng) for _ in range(rng.randrange(1, 200))]
        back = expanded(fold(names))
        assert sorted(back) == sorted(set(names)), "seed %d: %r" % (seed, names)


def test_a_thousand_hosts_fold_into_one_range():
    """1,000 padded names in shuffled order fold into one range."""
    names = expand("web-[0001-1000]")
    random.Random(1).shuffle(names)
    assert fold(names) == ["web-[0001-1000]"]
