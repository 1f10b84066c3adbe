"""FieldStatistics against NumPy/SciPy on the same samples (conventions: ALGORITHMS.md)."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from melissa.config.models import SAConfig
from melissa.server.stats import FieldStatistics

RTOL = 1e-10
THRESHOLDS = [-0.5, 0.25, 1.0]
ALL = SAConfig(
    mean=True, variance=True, skewness=True, kurtosis=True, min=True, max=True,
    threshold_exceedance=True, threshold_values=THRESHOLDS,
)
SELECTIONS = {
    "all": ALL,
    "mean": SAConfig(mean=True, variance=False),
    "variance": SAConfig(mean=False, variance=True),
    "skewness": SAConfig(mean=True, variance=False, skewness=True, max=True),
    "extrema only": SAConfig(mean=False, variance=False, min=True, max=True),
    "threshold only": SAConfig(
        mean=False, variance=False, threshold_exceedance=True, threshold_values=[THRESHOLDS[1]]
    ),
}


@dataclass
class Chunk:
    simulation: int
    time_step: int
    start: int
    values: np.ndarray


def make_chunks(rng: np.random.Generator, sims: int, steps: int, cells: int,
                dtype: type = np.float64, skip: float = 0.15) -> list[Chunk]:
    """Every simulation sends every time step in random sub-ranges of cells; a fraction `skip`
    of the chunks is lost (as from a crashed client), so counts differ between cells."""
    chunks = []
    for sim in range(sims):
        for t in range(steps):
            bounds = np.unique(np.r_[0, rng.integers(0, cells, 3), cells])
            for lo, hi in itertools.pairwise(bounds):
                if rng.random() >= skip:
                    # Skewed, shifted data: a check that is not blind to the mean or the tails.
                    x = 3.0 + rng.gamma(2.0, 1.5, hi - lo) * rng.choice([-1, 1])
                    chunks.append(Chunk(sim, t, int(lo), x.astype(dtype)))
    rng.shuffle(chunks)  # arrival order is arbitrary
    return chunks


def feed(stats: FieldStatistics, chunks: list[Chunk]) -> FieldStatistics:
    for c in chunks:
        stats.update(c.time_step, c.start, c.values, c.simulation)
    return stats


def reference(chunks: list[Chunk], steps: int, cells: int) -> dict[str, np.ndarray]:
    """Each output computed cell by cell by NumPy/SciPy from the raw samples (as float64)."""
    samples: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for c in chunks:
        for i, v in enumerate(c.values.astype(np.float64)):
            samples.setdefault((c.time_step, c.start + i), []).append((c.simulation, v))
    names = ["mean", "variance", "skewness", "kurtosis", "minimum", "maximum"]
    out = {name: np.full((steps, cells), np.nan) for name in names}
    out["count"] = np.zeros((steps, cells), np.int64)
    out["minimum_simulation"] = np.full((steps, cells), -1)
    out["maximum_simulation"] = np.full((steps, cells), -1)
    out["threshold_exceedance"] = np.zeros((len(THRESHOLDS), steps, cells), np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy/NumPy warn on n < 2 and constant data
        for (t, i), pairs in samples.items():
            ids, x = (np.array(v) for v in zip(*sorted(pairs)))
            out["count"][t, i] = len(x)
            out["mean"][t, i] = np.mean(x)
            out["variance"][t, i] = np.var(x, ddof=1) if len(x) > 1 else np.nan
            out["skewness"][t, i] = scipy.stats.skew(x, bias=True)
            out["kurtosis"][t, i] = scipy.stats.kurtosis(x, fisher=True, bias=True)
            out["minimum"][t, i], out["minimum_simulation"][t, i] = x.min(), ids[np.argmin(x)]
            out["maximum"][t, i], out["maximum_simulation"][t, i] = x.max(), ids[np.argmax(x)]
            for k, threshold in enumerate(THRESHOLDS):
                out["threshold_exceedance"][k, t, i] = np.sum(x > threshold)
    return out


def assert_matches(results: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                   sa: SAConfig) -> None:
    for name, array in results.items():
        want = expected[name]
        if name == "threshold_exceedance":
            want = want[[THRESHOLDS.index(t) for t in sa.threshold_values]]
        assert array.shape == want.shape, name
        if array.dtype.kind == "i":
            np.testing.assert_array_equal(array, want, err_msg=name)
        else:
            # Skewness and kurtosis are O(1) and dimensionless: a tiny floor for values near 0.
            atol = 1e-12 if name in ("skewness", "kurtosis") else 0.0
            np.testing.assert_allclose(array, want, rtol=RTOL, atol=atol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_statistics_match_numpy_and_scipy(selection: str, dtype: type) -> None:
    sa = SELECTIONS[selection]
    rng = np.random.default_rng(1)
    steps, cells = 3, 41
    chunks = make_chunks(rng, sims=9, steps=steps, cells=cells, dtype=dtype)
    results = feed(FieldStatistics(steps, cells, sa), chunks).results()
    expected = reference(chunks, steps, cells)
    assert len(set(expected["count"].ravel())) > 2, "the test needs cells of different counts"
    assert_matches(results, expected, sa)


def test_results_hold_exactly_the_selection() -> None:
    assert set(FieldStatistics(2, 3, ALL).results()) == {
        "count", "mean", "variance", "skewness", "kurtosis", "minimum", "minimum_simulation",
        "maximum", "maximum_simulation", "threshold_exceedance",
    }
    variance_only = FieldStatistics(2, 3, SELECTIONS["variance"])
    assert set(variance_only.results()) == {"count", "variance"}
    assert set(variance_only.state_dict()) == {"count", "mean", "m2"}  # no M3/M4 allocated
    assert variance_only.nbytes == 3 * 2 * 3 * 8


def test_chunks_longer_than_a_kernel_block() -> None:
    """Cells beyond the kernel's block size, from an unaligned start, against axis-wise NumPy."""
    rng = np.random.default_rng(2)
    cells, start = 40_000, 7
    x = rng.normal(1.0, 2.0, (5, cells - start))
    stats = FieldStatistics(1, cells, ALL)
    for sim, row in enumerate(x):
        stats.update(0, start, row, sim)
    r = stats.results()
    assert np.all(r["count"][0, :start] == 0) and np.all(np.isnan(r["mean"][0, :start]))
    np.testing.assert_allclose(r["variance"][0, start:], np.var(x, axis=0, ddof=1), rtol=RTOL)
    np.testing.assert_allclose(
        r["kurtosis"][0, start:], scipy.stats.kurtosis(x, axis=0), rtol=RTOL, atol=1e-12
    )
    np.testing.assert_array_equal(r["maximum_simulation"][0, start:], np.argmax(x, axis=0))
    np.testing.assert_array_equal(
        r["threshold_exceedance"][:, 0, start:],
        [np.sum(x > t, axis=0) for t in THRESHOLDS],
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(1, 6))
def test_merge_of_random_partial_states(seed: int, parts: int) -> None:
    """Split the chunks into `parts` disjoint sets, one state per set, merged pairwise in a random
    order: the same results as one state, and as NumPy/SciPy."""
    rng = np.random.default_rng(seed)
    steps, cells = 2, 23
    chunks = make_chunks(rng, sims=8, steps=steps, cells=cells)
    owner = rng.integers(0, parts, len(chunks))
    states = [
        feed(FieldStatistics(steps, cells, ALL), [c for c, o in zip(chunks, owner) if o == p])
        for p in range(parts)
    ]
    while len(states) > 1:
        a, b = (states.pop(int(rng.integers(len(states)))) for _ in range(2))
        a.merge(b)
        states.append(a)
    merged = states[0].results()
    single = feed(FieldStatistics(steps, cells, ALL), chunks).results()
    for name, array in single.items():
        np.testing.assert_allclose(merged[name], array, rtol=1e-12, atol=1e-13, err_msg=name)
    assert_matches(merged, reference(chunks, steps, cells), ALL)


def test_merge_with_an_empty_state_changes_nothing() -> None:
    chunks = make_chunks(np.random.default_rng(3), sims=4, steps=2, cells=10)
    stats = feed(FieldStatistics(2, 10, ALL), chunks)
    before = stats.results()
    stats.merge(FieldStatistics(2, 10, ALL))
    empty = FieldStatistics(2, 10, ALL)
    empty.merge(stats)
    for name, array in before.items():
        np.testing.assert_array_equal(stats.results()[name], array, err_msg=name)
        np.testing.assert_array_equal(empty.results()[name], array, err_msg=name)


def test_merge_refuses_other_selections_and_itself() -> None:
    stats = FieldStatistics(2, 3, ALL)
    for other in (FieldStatistics(2, 4, ALL), FieldStatistics(2, 3, SELECTIONS["mean"]), stats):
        with pytest.raises(ValueError, match="cannot merge"):
            stats.merge(other)


def test_constant_data_gives_zero_variance_and_nan_shape_moments() -> None:
    stats = FieldStatistics(1, 2, ALL)
    for sim in range(5):
        stats.update(0, 0, np.array([0.1, -7.0]), sim)
    r = stats.results()
    np.testing.assert_array_equal(r["variance"], 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(scipy.stats.skew([0.1] * 5)) and np.isnan(scipy.stats.kurtosis([0.1] * 5))
    assert np.all(np.isnan(r["skewness"])) and np.all(np.isnan(r["kurtosis"]))
    np.testing.assert_array_equal(r["mean"], [[0.1, -7.0]])


def test_single_and_no_sample() -> None:
    stats = FieldStatistics(1, 2, ALL)
    stats.update(0, 1, np.array([4.5]), 12)
    r = stats.results()
    np.testing.assert_array_equal(r["count"], [[0, 1]])
    np.testing.assert_array_equal(r["mean"], [[np.nan, 4.5]])
    assert np.all(np.isnan(r["variance"])) and np.all(np.isnan(r["skewness"]))
    np.testing.assert_array_equal(r["minimum"], [[np.nan, 4.5]])
    np.testing.assert_array_equal(r["maximum_simulation"], [[-1, 12]])
    np.testing.assert_array_equal(r["threshold_exceedance"][:, 0, 0], 0)


def test_extrema_ids_and_ties_go_to_the_smallest_id() -> None:
    stats = FieldStatistics(1, 3, ALL)
    stats.update(0, 0, np.array([2.0, 5.0, 1.0]), 7)
    stats.update(0, 0, np.array([2.0, -1.0, 9.0]), 3)  # cell 0 ties: id 3 wins although later
    stats.update(0, 0, np.array([2.0, 0.0, np.inf]), 9)
    r = stats.results()
    np.testing.assert_array_equal(r["minimum"], [[2.0, -1.0, 1.0]])
    np.testing.assert_array_equal(r["minimum_simulation"], [[3, 3, 7]])
    np.testing.assert_array_equal(r["maximum"], [[2.0, 5.0, np.inf]])
    np.testing.assert_array_equal(r["maximum_simulation"], [[3, 7, 9]])


@pytest.mark.parametrize("ids", [(5, 2), (2, 5)])
def test_merged_extrema_ties_go_to_the_smallest_id(ids: tuple[int, int]) -> None:
    a, b = FieldStatistics(1, 2, ALL), FieldStatistics(1, 2, ALL)
    a.update(0, 0, np.array([1.0, 0.0]), ids[0])
    b.update(0, 0, np.array([1.0, 3.0]), ids[1])
    a.merge(b)
    r = a.results()
    np.testing.assert_array_equal(r["minimum_simulation"], [[2, ids[0]]])
    np.testing.assert_array_equal(r["maximum_simulation"], [[2, ids[1]]])


@pytest.mark.parametrize("arrival", [(6, 4, 2, 8), (4, 2, 8, 6), (8, 6, 2, 4)])
def test_a_nan_sample_propagates_as_in_numpy(arrival: tuple[int, ...]) -> None:
    values = {4: 1.0, 6: np.nan, 2: 3.0, 8: np.nan}
    single, part_a, part_b = (FieldStatistics(1, 1, ALL) for _ in range(3))
    for sim in arrival:
        single.update(0, 0, np.array([values[sim]]), sim)
        (part_a if sim in arrival[:2] else part_b).update(0, 0, np.array([values[sim]]), sim)
    part_b.merge(part_a)
    for stats in (single, part_b):
        r = stats.results()
        assert np.isnan(r["minimum"][0, 0]) and np.isnan(r["maximum"][0, 0])
        assert r["minimum_simulation"][0, 0] == r["maximum_simulation"][0, 0] == 6
        assert np.isnan(r["mean"][0, 0]) and r["count"][0, 0] == 4


def test_threshold_exceedance_is_strict() -> None:
    stats = FieldStatistics(1, 3, ALL)
    t = THRESHOLDS[1]
    stats.update(0, 0, np.array([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)]), 0)
    stats.update(0, 0, np.array([t, t, t], dtype=np.float32), 1)  # 0.25 is exact in float32
    np.testing.assert_array_equal(stats.results()["threshold_exceedance"][1], [[0, 1, 0]])


def test_state_dict_round_trip() -> None:
    rng = np.random.default_rng(4)
    chunks = make_chunks(rng, sims=6, steps=2, cells=15)
    stats = feed(FieldStatistics(2, 15, ALL), chunks[:20])
    state = stats.state_dict()
    assert not any(a.flags.writeable for a in state.values())
    copy = FieldStatistics.from_state_dict({k: np.array(v) for k, v in state.items()}, ALL)
    feed(stats, chunks[20:])
    feed(copy, chunks[20:])
    for name, array in stats.results().items():
        np.testing.assert_array_equal(copy.results()[name], array, err_msg=name)
    assert copy.nbytes == stats.nbytes


def test_from_state_dict_rejects_a_state_of_another_selection() -> None:
    state = dict(FieldStatistics(2, 3, ALL).state_dict())
    with pytest.raises(ValueError, match="does not use"):
        FieldStatistics.from_state_dict(state, SELECTIONS["variance"])
    other_thresholds = ALL.model_copy(update={"threshold_values": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="thresholds"):
        FieldStatistics.from_state_dict(state, other_thresholds)
    del state["m4"]
    with pytest.raises(ValueError, match="lacks 'm4'"):
        FieldStatistics.from_state_dict(state, ALL)


@pytest.mark.parametrize(
    ("time_step", "start", "data", "simulation", "message"),
    [
        (2, 0, np.zeros(3), 0, "time step"),
        (-1, 0, np.zeros(3), 0, "time step"),
        (0, -1, np.zeros(3), 0, "out of the local range"),
        (0, 2, np.zeros(3), 0, "out of the local range"),
        (0, 0, np.zeros(3, np.int64), 0, "float64 or float32"),
        (0, 0, np.zeros(3, ">f8"), 0, "float64 or float32"),
        (0, 0, np.zeros((1, 3)), 0, "1-D"),
        (0, 0, np.zeros(6)[::2], 0, "contiguous"),
        (0, 0, np.zeros(3), -1, "simulation id"),
    ],
)
def test_update_validates_its_arguments(
    time_step: int, start: int, data: np.ndarray, simulation: int, message: str
) -> None:
    stats = FieldStatistics(2, 4, ALL)
    with pytest.raises(ValueError, match=message):
        stats.update(time_step, start, data, simulation)
    np.testing.assert_array_equal(stats.results()["count"], 0)  # nothing written


def test_read_only_input_and_numpy_integers_are_accepted() -> None:
    frame = np.arange(4.0)
    frame.flags.writeable = False
    stats = FieldStatistics(1, 6, ALL)
    stats.update(0, 2, frame, 0)
    stats.update(np.int32(0), np.int64(2), frame[::-1].copy(), np.uint16(1))  # type: ignore[arg-type]
    np.testing.assert_array_equal(frame, np.arange(4.0))
    np.testing.assert_array_equal(stats.results()["mean"][0, 2:], 1.5)
