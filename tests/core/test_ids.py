"""The one id checker (psqe_ray/core/ids.py) on small arrays with known answers."""

import numpy as np
import pytest

from psqe_ray.core.ids import as_ids, duplicates, out_of_range


def test_as_ids_accepts_and_refuses():
    assert as_ids("x", [2, 0, 1], 3).dtype == np.int64
    assert as_ids("x", []).shape == (0,)
    with pytest.raises(ValueError, match="x must be 1-D"):
        as_ids("x", [[1]])
    with pytest.raises(TypeError, match="x must hold integer ids"):
        as_ids("x", [0.5])
    with pytest.raises(ValueError, match=r"x holds a negative id \(-2\)"):
        as_ids("x", [1, -2])
    with pytest.raises(ValueError, match="x holds id 3, out of range for 3 entities"):
        as_ids("x", [0, 3], 3)


def test_out_of_range_names_the_first_offender_and_counts():
    assert out_of_range(np.array([0, 1, 2]), 3) is None
    assert out_of_range(np.array([], np.int64), 0) is None
    assert out_of_range(np.array([0, 7, -1, 9]), 3) == (7, 3)


def test_duplicates_within_a_part_and_against_earlier_parts():
    assert duplicates(np.array([3, 1, 3, 1, 2])).tolist() == [1, 3]
    seen = np.zeros(5, bool)
    seen[[0, 4]] = True
    assert duplicates(np.array([2, 4]), seen).tolist() == [4]
    assert duplicates(np.array([2, 9]), seen).tolist() == []  # 9 beyond the mask: unseen
