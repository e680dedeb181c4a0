"""``--format jsonl`` streams: each record is printed as its host finishes and only its host and
status are kept for the summary, so the fan-out's memory does not grow with hosts times what they
return. The command runs in this process (over real local agents) so that what it keeps can be
looked at; bench numbers are in the README."""

import json

import pytest

from chopsticks.fanout import command

SIZE = 100_000  # characters each host returns


@pytest.fixture
def kept_for_summary(monkeypatch):
    """What the fan-out keeps of each record until its end (``output.kept``'s answers)."""
    seen = []
    kept = command.kept

    def spy(entry, printed):
        seen.append(kept(entry, printed))
        return seen[-1]

    monkeypatch.setattr(command, "kept", spy)
    return seen


def run_in_process(fmt):
    return command.main(["--transport", "local", "-H", "h-[1-20]", "--format", fmt, "-q",
                         "call", "operator:mul", "--json-args", json.dumps(["x", SIZE])])


def test_jsonl_keeps_only_host_and_status_of_each_record(kept_for_summary, capsys, no_leaks):
    """jsonl: every host's full value is printed, and none is kept: 20 records of host and status only."""
    assert run_in_process("jsonl") == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 20 and all(r["value"] == "x" * SIZE for r in printed)
    assert sorted(kept_for_summary, key=lambda r: int(r["host"][2:])) == [
        {"host": "h-%d" % n, "status": "ok"} for n in range(1, 21)]


def test_json_and_table_keep_the_values_they_print_at_the_end(kept_for_summary, capsys):
    """json prints everything at the end, so it keeps every value (the contrast to jsonl)."""
    assert run_in_process("json") == 0
    assert len(kept_for_summary) == 20 and all(r["value"] == "x" * SIZE for r in kept_for_summary)
    assert len(json.loads(capsys.readouterr().out)["results"]) == 20
