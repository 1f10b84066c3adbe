"""FieldStatistics against NumPy/SciPy on the same samples (conventions: docs/statistics.md)."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import melissa.server.stats as stats_module
from melissa.config.models import SAConfig
from melissa.server.stats import FieldStatistics, kernels

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
    assert set(variance_only.state_dict()) == {  # no M3/M4, and no per-cell count array
        "shape", "count_offsets", "count_starts", "count_values", "mean", "m2"
    }
    # μ and M2 per cell and step; the counts: shape, 3 offsets, one segment (start, count) per step
    assert variance_only.nbytes == 2 * 2 * 3 * 8 + (2 + 3 + 2 * 2) * 8
    assert variance_only.nbytes == sum(a.nbytes for a in variance_only.state_dict().values())


def test_chunks_longer_than_a_kernel_block() -> None:
    """Cells beyond the kernel's block size, from an unaligned start, against axis-wise NumPy."""
    rng = np.random.default_rng(2)
    cells, start = 2 * kernels._BLOCK + 40_000, 7
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


# Piecewise-constant counts (counts.py): the kernel takes one count per segment of cells.


def segments(stats: FieldStatistics) -> list[list[tuple[int, int]]]:
    """Per time step, the (start, count) segments, read from state_dict(); checks they are
    canonical: from cell 0, strictly increasing starts, adjacent counts different."""
    state = stats.state_dict()
    offsets, starts, values = state["count_offsets"], state["count_starts"], state["count_values"]
    nb_time_steps, n_cells = stats.shape
    assert list(state["shape"]) == [nb_time_steps, n_cells] and len(offsets) == nb_time_steps + 1
    out = []
    for t in range(nb_time_steps):
        s, v = starts[offsets[t]:offsets[t + 1]], values[offsets[t]:offsets[t + 1]]
        if n_cells:
            assert s[0] == 0 and np.all(np.diff(s) > 0) and s[-1] < n_cells, s
            assert np.all(v[1:] != v[:-1]), v
        else:
            assert len(s) == 0
        out.append(list(zip(s.tolist(), v.tolist())))
    return out


def welford_reference(chunks: list[Chunk], steps: int, cells: int) -> dict[str, np.ndarray]:
    """The single-sample update of docs/statistics.md with a per-cell count, in NumPy, chunk by
    chunk in arrival order: the kernel with per-segment counts must give the same bits."""
    n = np.zeros((steps, cells), np.int64)
    mean, m2, m3, m4 = (np.zeros((steps, cells)) for _ in range(4))
    for c in chunks:
        cells_ = np.s_[c.time_step, c.start:c.start + len(c.values)]
        n[cells_] += 1
        fn = n[cells_].astype(np.float64)
        delta = c.values.astype(np.float64) - mean[cells_]
        delta_n = delta / fn
        term = delta * delta_n * (fn - 1.0)
        mom2, mom3, delta_n2 = m2[cells_].copy(), m3[cells_].copy(), delta_n * delta_n
        m4[cells_] += (term * delta_n2 * (fn * fn - 3.0 * fn + 3.0)
                       + 6.0 * delta_n2 * mom2 - 4.0 * delta_n * mom3)
        m3[cells_] = mom3 + term * delta_n * (fn - 2.0) - 3.0 * delta_n * mom2
        m2[cells_] = mom2 + term
        mean[cells_] += delta_n
    return {"count": n, "mean": mean, "m2": m2, "m3": m3, "m4": m4}


def test_segments_of_a_study_with_a_failed_piece() -> None:
    """Each simulation sends each step as the same 3 pieces; simulation 2 fails before sending
    the second piece of step 1. The counts stay 1 segment per step, 3 where the piece is lost."""
    rng = np.random.default_rng(5)
    steps, cells, pieces = 3, 30, [(0, 10), (10, 25), (25, 30)]
    chunks = [
        Chunk(sim, t, lo, rng.normal(size=hi - lo))
        for sim in range(4) for t in range(steps) for lo, hi in pieces
        if not (sim == 2 and t >= 1 and lo >= 10) and not (sim == 2 and t == 2)
    ]
    stats = FieldStatistics(steps, cells, ALL)
    assert segments(stats) == [[(0, 0)]] * steps
    for i, c in enumerate(chunks):
        stats.update(c.time_step, c.start, c.values, c.simulation)
        assert max(len(s) for s in segments(stats)) <= len(pieces)
        if i == 0:
            assert segments(stats)[0] == [(0, 1), (10, 0)]
    assert segments(stats) == [[(0, 4)], [(0, 4), (10, 3)], [(0, 3)]]
    assert_matches(stats.results(), reference(chunks, steps, cells), ALL)
    assert stats.nbytes == sum(a.nbytes for a in stats.state_dict().values())


def test_chunks_over_different_sub_ranges_with_different_counts() -> None:
    """Overlapping sub-ranges of one step, so that the counts form a staircase of segments,
    against NumPy/SciPy per cell and against the per-cell-count Welford update bit for bit."""
    rng = np.random.default_rng(6)
    block = kernels._BLOCK
    cells = block + 3_000  # more than a kernel block, so that segments cross block boundaries
    ranges = [(0, cells), (3, block + 600), (block + 6, block + 16), (5, 40), (0, block + 1),
              (100, cells), (block, block + 1), (0, cells), (7, 8), (cells - 1, cells)]
    chunks = [Chunk(sim, 0, lo, 5.0 + rng.gamma(2.0, 1.5, hi - lo)) for sim, (lo, hi)
              in enumerate(ranges)]
    stats = feed(FieldStatistics(1, cells, ALL), chunks)
    count = stats.results()["count"]
    assert len(segments(stats)[0]) == 1 + np.count_nonzero(np.diff(count[0]))
    assert len(set(count.ravel())) >= 4 and len(segments(stats)[0]) >= 8
    # The reference, vectorised over the cells that have the same simulations: one row per
    # simulation, NaN where it sent nothing.
    x = np.full((len(ranges), cells), np.nan)
    for c in chunks:
        x[c.simulation, c.start:c.start + len(c.values)] = c.values
    want = {name: np.zeros((1, cells), array.dtype) for name, array in stats.results().items()}
    want["threshold_exceedance"] = np.zeros((len(THRESHOLDS), 1, cells), np.int64)
    patterns, group = np.unique(~np.isnan(x), axis=1, return_inverse=True)
    for g, sent in enumerate(patterns.T):
        ids, cols = np.flatnonzero(sent), group == g
        y = x[np.ix_(ids, cols)]
        for name, value in [
            ("count", len(ids)), ("mean", np.mean(y, axis=0)), ("variance", np.var(y, 0, ddof=1)),
            ("skewness", scipy.stats.skew(y, axis=0, bias=True)),
            ("kurtosis", scipy.stats.kurtosis(y, axis=0, fisher=True, bias=True)),
            ("minimum", y.min(axis=0)), ("minimum_simulation", ids[np.argmin(y, axis=0)]),
            ("maximum", y.max(axis=0)), ("maximum_simulation", ids[np.argmax(y, axis=0)]),
        ]:
            want[name][0, cols] = value
        for k, t in enumerate(THRESHOLDS):
            want["threshold_exceedance"][k, 0, cols] = np.sum(y > t, axis=0)
    assert len(patterns.T) >= 8
    assert_matches(stats.results(), want, ALL)
    state, bits = stats.state_dict(), welford_reference(chunks, 1, cells)
    for name in ("mean", "m2", "m3", "m4"):
        np.testing.assert_array_equal(state[name], bits[name], err_msg=name)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]),
       sims=st.integers(1, 8), pieces=st.integers(1, 6), skip=st.sampled_from([0.0, 0.3, 0.7]))
def test_random_splits_match_numpy(seed: int, dtype: type, sims: int, pieces: int,
                                   skip: float) -> None:
    """Random pieces per simulation and step, some lost: canonical segments at every step,
    NumPy/SciPy results, and the bits of the per-cell-count update."""
    rng = np.random.default_rng(seed)
    steps, cells = 2, 37
    chunks = []
    for sim, t in itertools.product(range(sims), range(steps)):
        bounds = np.unique(np.r_[0, rng.integers(0, cells, pieces - 1), cells])
        for lo, hi in itertools.pairwise(bounds):
            if rng.random() >= skip:
                x = rng.normal(rng.normal(0, 10), rng.uniform(0.1, 3), hi - lo).astype(dtype)
                chunks.append(Chunk(sim, t, int(lo), x))
    rng.shuffle(chunks)
    stats = FieldStatistics(steps, cells, ALL)
    for c in chunks:
        stats.update(c.time_step, c.start, c.values, c.simulation)
        segments(stats)
    assert_matches(stats.results(), reference(chunks, steps, cells), ALL)
    state, bits = stats.state_dict(), welford_reference(chunks, steps, cells)
    np.testing.assert_array_equal(stats.results()["count"], bits["count"])
    for name in ("mean", "m2", "m3", "m4"):
        np.testing.assert_array_equal(state[name], bits[name], err_msg=name)


@pytest.mark.parametrize("per_cell", [False, True], ids=["per segment", "per cell"])
def test_merge_of_different_segmentations(per_cell: bool) -> None:
    """A and B have different segment boundaries at each step (and B none at step 1): the merge
    splits both at the union of boundaries, with scalar counts per segment or, for steps with
    many segments, per-cell counts."""
    rng = np.random.default_rng(7)
    steps, cells = 2, 50

    def chunks(sims: range, ranges: list[tuple[int, int, int]]) -> list[Chunk]:
        return [Chunk(sim, t, lo, rng.gamma(2.0, 1.5, hi - lo) - 1.0)
                for sim in sims for t, lo, hi in ranges]

    part_a = chunks(range(3), [(0, 0, 50), (1, 10, 20)]) + chunks(range(3, 5), [(0, 0, 30)])
    part_b = chunks(range(5, 9), [(0, 20, 50)]) + chunks(range(9, 10), [(0, 25, 26)])
    a = feed(FieldStatistics(steps, cells, ALL), part_a)
    b = feed(FieldStatistics(steps, cells, ALL), part_b)
    assert segments(a) == [[(0, 5), (30, 3)], [(0, 0), (10, 3), (20, 0)]]
    assert segments(b) == [[(0, 0), (20, 4), (25, 5), (26, 4)], [(0, 0)]]
    with mock.patch.object(stats_module, "_MERGE_SEGMENTS", 0 if per_cell else 32):
        a.merge(b)
    assert segments(a) == [[(0, 5), (20, 9), (25, 10), (26, 9), (30, 7)],
                           [(0, 0), (10, 3), (20, 0)]]
    assert_matches(a.results(), reference(part_a + part_b, steps, cells), ALL)
    single = feed(FieldStatistics(steps, cells, ALL), part_a + part_b).results()
    for name, array in a.results().items():
        np.testing.assert_allclose(array, single[name], rtol=1e-12, atol=1e-13, err_msg=name)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_cell=st.booleans())
def test_merge_of_random_segmentations(seed: int, per_cell: bool) -> None:
    """Two states from random pieces (so, random segmentations), merged both ways round."""
    rng = np.random.default_rng(seed)
    steps, cells = 2, 29
    chunks = make_chunks(rng, sims=10, steps=steps, cells=cells, skip=0.4)
    owner = rng.integers(0, 2, len(chunks))
    parts = [[c for c, o in zip(chunks, owner) if o == p] for p in (0, 1)]
    want = reference(chunks, steps, cells)
    with mock.patch.object(stats_module, "_MERGE_SEGMENTS", 0 if per_cell else 32):
        for first, second in ((0, 1), (1, 0)):
            a = feed(FieldStatistics(steps, cells, ALL), parts[first])
            a.merge(feed(FieldStatistics(steps, cells, ALL), parts[second]))
            segments(a)
            assert_matches(a.results(), want, ALL)


def test_merge_with_an_empty_state_keeps_infinite_values() -> None:
    """An empty side contributes nothing, even where the other holds inf (the merge formulas
    would turn inf - inf into NaN)."""
    for per_cell in (False, True):
        with mock.patch.object(stats_module, "_MERGE_SEGMENTS", 0 if per_cell else 32):
            stats, empty = FieldStatistics(1, 3, ALL), FieldStatistics(1, 3, ALL)
            stats.update(0, 0, np.array([np.inf, -np.inf, 1.0]), 0)
            stats.update(0, 2, np.array([2.0]), 1)
            before = stats.results()
            stats.merge(FieldStatistics(1, 3, ALL))
            empty.merge(stats)
            for name, array in before.items():
                np.testing.assert_array_equal(stats.results()[name], array, err_msg=name)
                np.testing.assert_array_equal(empty.results()[name], array, err_msg=name)
    np.testing.assert_array_equal(before["mean"], [[np.inf, -np.inf, 1.5]])


def test_state_dict_round_trip_of_segments() -> None:
    rng = np.random.default_rng(8)
    chunks = make_chunks(rng, sims=6, steps=3, cells=40, skip=0.4)
    stats = feed(FieldStatistics(3, 40, ALL), chunks[:30])
    state = {k: np.array(v) for k, v in stats.state_dict().items()}
    assert len(state["count_starts"]) > 3, "the test needs several segments per step"
    assert all(state[k].dtype == np.int64 for k in ("shape", "count_offsets", "count_starts",
                                                     "count_values"))
    copy = FieldStatistics.from_state_dict(state, ALL)
    assert segments(copy) == segments(stats)
    for name, array in stats.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[name], array, err_msg=name)
    feed(stats, chunks[30:])
    feed(copy, chunks[30:])
    for name, array in stats.results().items():
        np.testing.assert_array_equal(copy.results()[name], array, err_msg=name)
    # Equal neighbours (not canonical, as a foreign writer might leave them) merge on loading.
    split = FieldStatistics(1, 4, SELECTIONS["mean"]).state_dict()
    split = dict(split, count_offsets=np.array([0, 2]), count_starts=np.array([0, 2]),
                 count_values=np.array([0, 0]))
    assert segments(FieldStatistics.from_state_dict(split, SELECTIONS["mean"])) == [[(0, 0)]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count_starts": np.array([1, 5])}, "do not cover"),
        ({"count_starts": np.array([0, 7])}, "do not cover"),
        ({"count_offsets": np.array([0, 2, 2])}, "do not cover"),
        ({"count_offsets": np.array([0, 2])}, "nondecreasing"),
        ({"count_offsets": np.array([0, 1, 3])}, "offsets end at"),
        ({"count_values": np.array([1, -1])}, "negative"),
        ({"count_values": np.array([1.0, 2.0])}, "int64"),
        ({"shape": np.array([2, 7, 1])}, "shape"),
        ({"shape": None}, "lacks 'shape'"),
        ({"count_offsets": None}, "lacks 'count_offsets'"),
    ],
)
def test_from_state_dict_rejects_bad_count_segments(
    change: dict[str, np.ndarray | None], message: str
) -> None:
    stats = FieldStatistics(2, 7, SELECTIONS["mean"])
    stats.update(0, 0, np.zeros(7), 0)
    stats.update(1, 2, np.zeros(3), 0)
    state = dict(stats.state_dict())
    assert list(state["count_starts"]) == [0, 0, 2, 5]  # step 0: one segment; step 1: three
    state["count_offsets"], state["count_starts"] = np.array([0, 1, 2]), np.array([0, 0])
    state["count_values"] = np.array([1, 0])
    FieldStatistics.from_state_dict(state, SELECTIONS["mean"])  # valid: step 1 counts all 0
    for name, value in change.items():
        if value is None:
            del state[name]
        else:
            state[name] = value
    with pytest.raises(ValueError, match=message):
        FieldStatistics.from_state_dict(state, SELECTIONS["mean"])


@pytest.mark.parametrize("selection", ["all", "extrema only"])
def test_no_cells(selection: str) -> None:
    """A rank with no cell of the field: no segment, empty results, round trip and merge."""
    stats = FieldStatistics(2, 0, SELECTIONS[selection])
    stats.update(1, 0, np.zeros(0), 0)
    assert segments(stats) == [[], []]
    assert stats.results()["count"].shape == (2, 0)
    copy = FieldStatistics.from_state_dict(stats.state_dict(), SELECTIONS[selection])
    copy.merge(stats)
    assert copy.shape == (2, 0) and segments(copy) == [[], []]
