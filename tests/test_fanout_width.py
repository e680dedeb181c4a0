"""Tables line up by the columns text takes on a terminal: CJK and emoji two, combining marks none
(``fanout.width``), in the table itself and from the shell over local agents."""

import io

from chopsticks.fanout import width as terminal
from chopsticks.fanout.output import show

from test_fanout import local


def test_wide_characters_count_two_columns_and_marks_none():
    """East Asian width W/F is two columns, a combining mark or a joiner zero, the rest one."""
    assert terminal.columns("web-1") == 5
    assert terminal.columns("東京") == 4
    assert terminal.columns("ｗｅｂ") == 6  # fullwidth Latin (F)
    assert terminal.columns("🍣") == 2
    assert terminal.columns("e\u0301") == 1  # e + combining acute
    assert terminal.columns("a\u200db") == 2  # a zero-width joiner
    assert terminal.columns("Ωé") == 2


def test_clip_and_pad_work_in_columns():
    """A clipped cell never passes its width, even when a wide character would straddle the edge."""
    assert terminal.clip("東京都庁", 8) == "東京都庁"
    assert terminal.clip("東京都庁", 7) == "東京都…"
    assert terminal.clip("東京都庁", 6) == "東京…"
    assert terminal.columns(terminal.clip("東京都庁", 6)) == 5
    assert terminal.pad("東京", 6) == "東京  "
    assert terminal.pad("e\u0301", 3) == "e\u0301  "


def starts_of(line, words):
    """The terminal column each of ``words`` starts at in ``line``."""
    return [terminal.columns(line[:line.index(word)]) for word in words]


def test_a_table_of_cjk_emoji_and_combining_values_lines_up():
    """Facts with CJK, emoji and combining marks: every column starts at the same terminal column on each row."""
    records = [
        {"host": "東京-1", "status": "ok", "value": {"hostname": "サーバー", "arch": "x86_64"}},
        {"host": "a", "status": "ok", "value": {"hostname": "🍣🍣", "arch": "arm64"}},
        {"host": "cafe\u0301", "status": "ok", "value": {"hostname": "plain", "arch": "riscv"}},
        {"host": "ｗｅｂ", "status": "failed", "error": "ConnectError: 接続できません"},
    ]
    out = io.StringIO()
    show(records, ["hostname", "arch"], False, out)
    header, *rows = out.getvalue().splitlines()[:5]
    expected = starts_of(header, ["status", "hostname", "arch"])
    for row, (status, name, arch) in zip(rows, [("ok", "サーバー", "x86_64"), ("ok", "🍣🍣", "arm64"),
                                                ("ok", "plain", "riscv")]):
        assert starts_of(row, [status, name, arch]) == expected, out.getvalue()
    assert starts_of(rows[3], ["failed", "ConnectError"]) == expected[:2]


def test_from_the_shell_cjk_and_emoji_host_names_line_up():
    """Over local agents named in CJK, emoji and with a combining mark, the status and value columns line up."""
    result = local("-H", "東京-1,a,🍣-2,cafe\u0301", "--format", "table", "call", "remote_helpers:echo", "値")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()[:5]
    expected = starts_of(header, ["status", "value"])
    assert [row.split()[0] for row in rows] == ["東京-1", "a", "🍣-2", "cafe\u0301"]
    for row in rows:
        assert starts_of(row, ["ok", "値"]) == expected, result.stdout
