"""The heat-equation example (examples/heat_equation/heat.py): physics, numerics and command line."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HEAT_PATH = Path(__file__).resolve().parents[2] / "examples" / "heat_equation" / "heat.py"


def _load_heat() -> types.ModuleType:
    # the example is a script, not a package module: load it from its path
    spec = importlib.util.spec_from_file_location("heat_example", HEAT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


heat = _load_heat()

# initial, left, right, top, bottom, diffusivity
PARAMS = (100.0, 500.0, 300.0, 400.0, 200.0, 1.3)


def run(*params: float, **grid: int) -> list[np.ndarray]:
    return list(heat.simulate(*params, **grid))


def test_shape_dtype_and_number_of_steps() -> None:
    fields = run(*PARAMS, nx=12, ny=9, nb_steps=5)
    assert len(fields) == 5
    for field in fields:
        assert field.shape == (9, 12)
        assert field.dtype == np.float64
        assert field.flags.c_contiguous
    # each yielded array is a copy: later steps must not overwrite earlier ones
    assert not np.array_equal(fields[0], fields[-1])


def test_default_grid_is_100_by_100_with_100_steps() -> None:
    fields = run(*PARAMS)
    assert len(fields) == 100
    assert fields[0].shape == (100, 100)


@pytest.mark.parametrize("diffusivity", [0.5, 2.0, 50.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maximum_principle(diffusivity: float, seed: int) -> None:
    # stable explicit scheme: no value leaves the range of the initial and wall temperatures,
    # including for a diffusivity far above the study's range (the time step adapts)
    temps = np.random.default_rng(seed).uniform(100.0, 500.0, size=5)
    lo, hi = temps.min(), temps.max()
    for field in heat.simulate(*temps, diffusivity, nx=40, ny=30, nb_steps=20):
        assert np.all(np.isfinite(field))
        assert field.min() >= lo - 1e-9 * hi
        assert field.max() <= hi + 1e-9 * hi


def test_time_step_respects_stability_limit_with_margin() -> None:
    for nx, ny, alpha in [(100, 100, 2.0), (100, 100, 0.5), (40, 7, 1.0), (5, 5, 2.0)]:
        n_sub = heat.sub_iterations(alpha, nx=nx, ny=ny, nb_steps=100)
        dt = heat.T_END / 100 / n_sub
        limit = 1.0 / (alpha * (2 * (nx - 1) ** 2 + 2 * (ny - 1) ** 2))
        assert dt <= 0.85 * limit


def test_walls_keep_their_temperatures() -> None:
    _, left, right, top, bottom, _ = PARAMS
    for field in run(*PARAMS, nx=20, ny=15, nb_steps=10):
        assert np.all(field[1:-1, 0] == left)
        assert np.all(field[1:-1, -1] == right)
        assert np.all(field[-1, 1:-1] == top)
        assert np.all(field[0, 1:-1] == bottom)
        assert field[0, 0] == 0.5 * (bottom + left)
        assert field[-1, -1] == 0.5 * (top + right)


def test_left_right_symmetric_walls_give_mirrored_field() -> None:
    for field in run(150.0, 450.0, 450.0, 300.0, 120.0, 1.7, nx=31, ny=20, nb_steps=10):
        np.testing.assert_array_equal(field, field[:, ::-1])


def test_top_bottom_symmetric_walls_give_mirrored_field() -> None:
    for field in run(150.0, 450.0, 220.0, 300.0, 300.0, 0.9, nx=16, ny=25, nb_steps=10):
        np.testing.assert_array_equal(field, field[::-1, :])


def test_diagonal_symmetry() -> None:
    # left == bottom and right == top on a square grid: symmetric about the diagonal
    for field in run(150.0, 450.0, 220.0, 220.0, 450.0, 1.1, nx=21, ny=21, nb_steps=10):
        np.testing.assert_allclose(field, field.T, rtol=1e-13)


def test_asymmetric_walls_give_asymmetric_field() -> None:
    # the symmetry tests above must be able to fail
    field = run(150.0, 450.0, 220.0, 300.0, 300.0, 0.9, nx=16, ny=25, nb_steps=10)[-1]
    assert np.abs(field - field[:, ::-1]).max() > 1.0


def test_deterministic() -> None:
    first = run(*PARAMS, nx=25, ny=25, nb_steps=8)
    second = run(*PARAMS, nx=25, ny=25, nb_steps=8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_parameters_matter() -> None:
    base = run(*PARAMS, nx=25, ny=25, nb_steps=8)[-1]
    for i in range(6):
        changed = list(PARAMS)
        changed[i] *= 1.2
        other = run(*changed, nx=25, ny=25, nb_steps=8)[-1]
        assert np.abs(other - base).max() > 1.0, f"parameter {i} has no effect"


@pytest.mark.parametrize("diffusivity", [0.5, 2.0])
def test_heat_visibly_diffuses_over_the_run(diffusivity: float) -> None:
    # the study's default grid and step count: the field must evolve clearly from first to last
    initial, left, right, top, bottom = 100.0, 500.0, 400.0, 300.0, 200.0
    fields = run(initial, left, right, top, bottom, diffusivity)
    first, last = fields[0], fields[-1]
    # step 0 is one output interval in: the centre has not felt the walls yet
    assert first[50, 50] == pytest.approx(initial, abs=1e-6)
    # by the last step heat has reached the centre (at least 25 % of the way to the wall mean)
    wall_mean = (left + right + top + bottom) / 4
    assert last[50, 50] - initial > 0.25 * (wall_mean - initial)
    # near a wall (5 points in) the change is larger still
    assert last[50, 5] - first[50, 5] > 0.4 * (left - initial)
    # and the centre warms monotonically from step to step
    centre = np.array([f[50, 50] for f in fields])
    assert np.all(np.diff(centre) >= 0)


def test_matches_the_half_space_solution_near_a_wall() -> None:
    # Left wall at 1, everything else at 0. Near the middle of the left wall, for short times,
    # the other walls are far away and T(x, t) = erfc(x / (2 sqrt(alpha t))). This checks the
    # scaling of the diffusivity, the grid spacing and the output-time convention
    # (output step k is t = (k + 1) * T_END / nb_steps).
    alpha, nb_steps, k = 1.0, 100, 9
    t = (k + 1) * heat.T_END / nb_steps
    fields = run(0.0, 1.0, 0.0, 0.0, 0.0, alpha, nx=100, ny=100, nb_steps=nb_steps)
    x = np.arange(100) / 99
    exact = np.array([math.erfc(xi / (2 * math.sqrt(alpha * t))) for xi in x[1:40]])
    np.testing.assert_allclose(fields[k][50, 1:40], exact, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nx": 2},
        {"ny": 1},
        {"nb_steps": 0},
    ],
)
def test_rejects_bad_grids(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        run(*PARAMS, **kwargs)


@pytest.mark.parametrize("diffusivity", [0.0, -1.0, math.nan, math.inf])
def test_rejects_bad_diffusivity(diffusivity: float) -> None:
    with pytest.raises(ValueError):
        run(*PARAMS[:5], diffusivity, nx=5, ny=5, nb_steps=1)


# --- command line ----------------------------------------------------------------------------


class FakeClientError(Exception):
    pass


class FakeClient(types.ModuleType):
    """Records the client calls main() makes, instead of talking to a server."""

    ClientError = FakeClientError

    def __init__(self, fail_init: str | None = None) -> None:
        super().__init__("melissa.client")
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.sent: list[np.ndarray] = []
        self.fail_init = fail_init

    def init(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("init", args, kwargs))
        if self.fail_init:
            raise FakeClientError(self.fail_init)

    def send(self, field: str, array: np.ndarray) -> None:
        self.calls.append(("send", (field,), {}))
        self.sent.append(np.array(array, copy=True))

    def finalize(self) -> None:
        self.calls.append(("finalize", (), {}))


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    import melissa

    client = FakeClient()
    monkeypatch.setitem(sys.modules, "melissa.client", client)
    monkeypatch.setattr(melissa, "client", client, raising=False)
    return client


def test_main_streams_every_step(fake_client: FakeClient) -> None:
    argv = ["100", "500", "300", "400", "200", "1.3", "--nx", "12", "--ny=7", "--steps", "4"]
    assert heat.main(argv) == 0
    names = [c[0] for c in fake_client.calls]
    assert names == ["init"] + ["send"] * 4 + ["finalize"]
    assert fake_client.calls[0][1:] == (("temperature", 84), {"shape": (7, 12)})
    expected = run(*PARAMS, nx=12, ny=7, nb_steps=4)
    for sent, ref in zip(fake_client.sent, expected, strict=True):
        np.testing.assert_array_equal(sent, ref)


def test_client_errors_give_a_message_and_exit_1(
    fake_client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_client.fail_init = "MELISSA_SERVER not set"
    assert heat.main(["1", "2", "3", "4", "5", "1", "--nx", "3", "--ny", "3"]) == 1
    assert "heat.py: error: MELISSA_SERVER not set" in capsys.readouterr().err
    assert fake_client.sent == []


def test_main_accepts_exponent_and_negative_values(fake_client: FakeClient) -> None:
    assert heat.main(["-1e-05", "2.5E2", "3", "4", "5", "1e-1", "--nx", "3", "--ny", "3",
                      "--steps", "1"]) == 0
    assert len(fake_client.sent) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["1", "2", "3"], "expected 6 parameter values"),
        (["1", "2", "3", "4", "5", "6", "7"], "expected 6 parameter values"),
        (["1", "2", "3", "4", "5", "abc"], "not a number"),
        (["1", "2", "3", "4", "5", "nan"], "not a finite number"),
        (["1", "2", "3", "4", "5", "0"], "diffusivity must be > 0"),
        (["1", "2", "3", "4", "5", "1", "--nx"], "needs a value"),
        (["1", "2", "3", "4", "5", "1", "--nx", "ten"], "expects an integer"),
        (["1", "2", "3", "4", "5", "1", "--nx", "2"], "at least 3"),
        (["1", "2", "3", "4", "5", "1", "--steps", "0"], "must be positive"),
        (["1", "2", "3", "4", "5", "1", "--dt", "3"], "unknown option"),
    ],
)
def test_bad_command_line_gives_usage(
    argv: list[str], message: str, fake_client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert heat.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: heat.py" in err
    assert fake_client.calls == []  # nothing reaches the server


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert heat.main(["--help"]) == 0
    assert "usage: heat.py" in capsys.readouterr().out


def test_study_config_matches_the_script() -> None:
    # config_sa.json and heat.py must agree: one parameter per argument, in order, and the
    # number of time steps the script sends by default
    from melissa.config import load_config

    config = load_config(HEAT_PATH.parent / "config_sa.json").config
    names = [p.name for p in config.parameters]
    assert len(names) == len(heat.PARAMETER_NAMES)
    for name, expected in zip(names, heat.PARAMETER_NAMES, strict=True):
        assert name.startswith(expected)
    assert config.study_options.nb_time_steps == 100
    assert config.study_options.field_names == [heat.FIELD]
    diffusivity = config.parameters[-1]
    assert diffusivity.distribution == "uniform" and diffusivity.low > 0
    # the thresholds lie inside the temperature range, so exceedance is informative
    assert all(100.0 < t < 500.0 for t in config.sa_config.threshold_values)
