"""Values a real agent returns arrive as their documented types (codec.encode on the remote)."""

import cli_values


def test_mixed_in_enum_members_arrive_as_their_values(local):
    """A (str, Enum) member arrives as its value ('red', not 'Colour.RED'), as IntEnum and float ones do."""
    value = local.call(cli_values.enums)
    assert value == ["red", 3, 0.5, {"red": "red"}]
    assert [type(item) for item in value] == [str, int, float, dict]
    assert type(next(iter(value[3]))) is str
