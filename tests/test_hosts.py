"""Host lists from the shell: ranges, splitting, files (pure logic)."""

import tracemalloc

import pytest

from chopsticks.fanout.hosts import MAX_HOSTS, HostSpecError, collect, count, expand, split


def test_a_plain_name_is_itself():
    assert expand("web-1.example.com") == ["web-1.example.com"]


def test_numeric_ranges_keep_the_first_bounds_padding():
    assert expand("web-[001-003]") == ["web-001", "web-002", "web-003"]
    assert expand("web-[8-11]") == ["web-8", "web-9", "web-10", "web-11"]
    assert expand("web-[09-11]") == ["web-09", "web-10", "web-11"]


def test_several_brackets_multiply_in_order():
    hosts = expand("10.0.[1-3].[1-254]")
    assert len(hosts) == 3 * 254
    assert hosts[:2] == ["10.0.1.1", "10.0.1.2"] and hosts[-1] == "10.0.3.254"


def test_lists_letters_and_single_values():
    assert expand("db-[1,3,5-6]") == ["db-1", "db-3", "db-5", "db-6"]
    assert expand("rack[a-c]") == ["racka", "rackb", "rackc"]
    assert expand("x[7]") == ["x7"]


def test_user_and_port_around_a_range():
    assert expand("deploy@web-[1-2]:2222") == ["deploy@web-1:2222", "deploy@web-2:2222"]


def test_ipv6_brackets_stay_as_written():
    assert expand("[::1]:2222") == ["[::1]:2222"]
    assert expand("root@[fe80::1]") == ["root@[fe80::1]"]


@pytest.mark.parametrize("pattern, message", [
    ("web-[1-3", "unclosed '['"),
    ("web-1-3]", "']' without '['"),
    ("web-[3-1]", "runs backwards"),
    ("web-[x-]", "malformed range [x-]"),
    ("web-[]", "malformed range []"),
    ("web-[1-2-3]", "malformed range"),
    ("web-[a-Z]", "not a run of letters"),
    ("web-[[1-2]]", "cannot nest"),
    ("h[1-1000].[1-1001]", "'h[1-1000].[1-1001]' expands to 1,001,000 hosts, more than the limit of 1,000,000"),
    ("h[0-%d]" % MAX_HOSTS, "expands to 1,000,001 hosts, more than the limit of 1,000,000"),
])
def test_malformed_patterns_say_what_is_wrong(pattern, message):
    """Each malformed or too big pattern is a HostSpecError saying what is wrong."""
    with pytest.raises(HostSpecError) as info:
        expand(pattern)
    assert message in str(info.value)


def test_split_on_commas_and_spaces_outside_brackets_and_drop_comments():
    text = "web-[1,2], db-1  db-2\n# a comment line\ncache-1 # trailing comment\n\n"
    assert split(text) == ["web-[1,2]", "db-1", "db-2", "cache-1"]


def test_collect_merges_arguments_and_files_in_order_without_duplicates(tmp_path):
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("b-2\nc-[1-2]\n")
    assert collect(["a-1,b-[1-2]"], [str(hosts_file)]) == ["a-1", "b-1", "b-2", "c-1", "c-2"]


def test_a_missing_or_binary_hosts_file_is_a_clear_error(tmp_path):
    with pytest.raises(HostSpecError, match="cannot read hosts file .*No such file"):
        collect([], [str(tmp_path / "nope")])
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HostSpecError, match="not UTF-8"):
        collect([], [str(binary)])


@pytest.mark.parametrize("specs, message", [
    (["web-[1-1000000000]"], "'web-[1-1000000000]' expands to 1,000,000,000 hosts"),
    (["10.[0-255].[0-255].[0-255]"], "expands to 16,777,216 hosts"),
    (["h[1-999999,1-999999,1-999999]"], "expands to 2,999,997 hosts"),
    (["a-[1-600000]", "b-[1-600000]"], "the host list names 1,200,000 hosts"),
    (["[1-%d].[1-%d]" % (10 ** 20, 10 ** 20)], "expands to {:,} hosts".format(10 ** 40)),
])
def test_huge_host_lists_are_counted_and_refused_before_any_name_is_made(specs, message):
    """Ranges are counted, not built: a billion hosts (or a sum over patterns) fails at once, in little memory."""
    tracemalloc.start()
    try:
        with pytest.raises(HostSpecError) as info:
            collect(specs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, "%d bytes allocated before refusing" % peak
    assert message in str(info.value) and "more than the limit of 1,000,000" in str(info.value)


def test_count_matches_what_expand_makes():
    """count() is the length of expand() for lists, letters, padding and several brackets."""
    for pattern in ["web-[001-010]", "r[a-c]-[1,3,5-7]", "plain", "[::1]:22", "x[7].y[08-10]"]:
        assert count(pattern) == len(expand(pattern))
