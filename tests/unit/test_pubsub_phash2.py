"""erlang:phash2 port against the OTP 25 test vectors of the spec (Appendix A)."""

from __future__ import annotations

import pytest

from kraken.pubsub.phash2 import hash32, phash2, shard_of

VECTORS = [
    (b"", 147926629, 1, 5),
    (b"a", 1589197455, 3, 7),
    (b"topic1", 3302283890, 2, 2),
    (b"topic2", 219783516, 0, 4),
    (b"topic3", 1103402808, 0, 0),
    (b"topicA", 495788806, 2, 6),
    (b"topicB", 1498351947, 3, 3),
    (b"topicC", 3177919688, 0, 0),
    (b"t1", 2896178416, 0, 0),
    (b"t2", 3923898370, 2, 2),
    (b"other", 574484218, 2, 2),
    (b"null", 2366393232, 0, 0),
    (b"foo", 161968632, 0, 0),
    (b"bar", 230304278, 2, 6),
    (b"alpha", 1653165370, 2, 2),
    (b"beta", 201137777, 1, 1),
    (b"gamma", 1058637871, 3, 7),
    (b"delta", 1928409309, 1, 5),
    (b"twelve-bytes", 2558707432, 0, 0),
    (b"a-much-longer-topic-name-0123456789", 219260026, 2, 2),
]


@pytest.mark.parametrize(("topic", "full", "mod4", "mod8"), VECTORS)
def test_phash2_matches_otp(topic: bytes, full: int, mod4: int, mod8: int) -> None:
    assert hash32(topic) == full
    assert phash2(topic, 4) == mod4 == shard_of(topic, 4)
    assert phash2(topic, 8) == mod8 == shard_of(topic, 8)
    assert phash2(topic) == full & ((1 << 27) - 1)


def test_every_tail_length_stays_32_bit() -> None:
    for n in range(40):
        h = hash32(bytes(range(n)))
        assert 0 <= h < 1 << 32
