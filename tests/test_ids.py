"""Generated ids: the hex of a version-4 UUID (SPEC §1), unique without a system call each."""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid

from trio_session import Message, TextBlock
from trio_session._messages import _Ids, new_id


def test_ids_are_uuid4_hex_and_unique() -> None:
    ids = [new_id() for _ in range(10_000)]
    ids.append(Message(role="user", content=[TextBlock("x")]).id)
    assert len(set(ids)) == len(ids)
    for value in ids[:100] + ids[-100:]:
        parsed = uuid.UUID(value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_another_process_draws_its_own_ids() -> None:
    code = "from trio_session._messages import new_id; print(new_id())"
    child = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    parent = new_id()
    assert uuid.UUID(child).version == 4
    assert child[:20] != parent[:20]


def test_the_counter_carries_into_its_high_digits_and_reseeds_when_it_wraps() -> None:
    ids = _Ids()
    prefix = ids.prefix
    # 4096 ids before the 48-bit counter wraps: the high digits move on at each
    # multiple of 4096, and the last id of the prefix is all f's.
    ids.counter = itertools.count(0xFFFF_FFFF_E000)
    drawn = [ids.next() for _ in range(8192)]
    assert drawn == [f"{prefix}{n:012x}" for n in range(0xFFFF_FFFF_E000, 0x1_0000_0000_0000)]
    after_wrap = ids.next()
    assert ids.prefix != prefix
    assert after_wrap == f"{ids.prefix}{1:012x}"
    assert uuid.UUID(after_wrap).version == 4
