from __future__ import annotations

from local_model.text import StopMatcher, Utf8Assembler


def test_utf8_split_across_pieces() -> None:
    data = "é€😀".encode()
    assembler = Utf8Assembler()
    out = "".join(assembler.feed(data[i : i + 1]) for i in range(len(data)))
    assert out + assembler.flush() == "é€😀"


def test_utf8_truncated_sequence_is_replaced_at_the_end() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"ok\xe2\x82") == "ok"
    assert assembler.flush() == "\ufffd"


def test_no_stops_passes_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_stop_found_across_feeds() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("hello #") == ("hello ", False)
    assert matcher.feed("#") == ("", False)
    assert matcher.feed("# and more") == ("", True)


def test_false_alarm_is_released() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("a<") == ("a", False)
    assert matcher.feed("b") == ("<b", False)


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["world", "lo"])
    assert matcher.feed("hello world") == ("hel", True)


def test_flush_releases_held_prefix() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("end ST") == ("end ", False)
    assert matcher.flush() == "ST"
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopMatcher(["", "x"])
    assert matcher.feed("abc") == ("abc", False)
