"""Samples from the stream: chunks of several fields and client ranks assembled into one sample
per time step, parameters from HELLO, and their scaling from the distributions in config.json."""

from __future__ import annotations

import numpy as np
import pytest

from melissa.config.models import LogUniformParameter, NormalParameter, UniformParameter
from melissa.errors import ProtocolError
from melissa.server.learning.samples import (
    ParameterScaler,
    SampleAssembler,
    parameters_from_hello,
    time_input,
)
from melissa.server.registry import FieldInfo

U = FieldInfo(0, "u", 6, (2, 3), 0, 6)
V = FieldInfo(1, "v", 2, None, 0, 2)


def test_a_sample_is_complete_once_every_cell_of_every_field_is_in() -> None:
    assembler = SampleAssembler(["u", "v"])
    assembler.declare(U)
    assembler.declare(V)
    u = np.arange(6, dtype=np.float64)
    # two client ranks' chunks of u at step 1, v in between, another step interleaved
    assert assembler.add(U, 7, 1, 0, u[:4]) is None
    assert assembler.add(V, 7, 1, 0, np.array([9.0, 8.0])) is None
    assert assembler.add(U, 7, 2, 0, u[:4]) is None
    fields = assembler.add(U, 7, 1, 4, u[4:])
    assert fields is not None and assembler.pending == 1  # step 2 still waits
    assert fields["u"].dtype == np.float32 and fields["u"].shape == (2, 3)
    np.testing.assert_array_equal(fields["u"], u.reshape(2, 3))
    np.testing.assert_array_equal(fields["v"], [9.0, 8.0])


def test_the_sample_owns_its_values() -> None:
    assembler = SampleAssembler(["v"])
    assembler.declare(V)
    chunk = np.array([1.0, 2.0])
    fields = assembler.add(V, 0, 0, 0, chunk)
    chunk[:] = -1  # the ZeroMQ frame's memory is reused after on_data returns
    assert fields is not None and fields["v"].tolist() == [1.0, 2.0]


def test_parameters_come_from_hello_in_the_study_order() -> None:
    values = parameters_from_hello({"parameters": {"b": 2, "a": 0.5}}, ["a", "b"], 3)
    assert values.tolist() == [0.5, 2.0]
    for body, message in [
        ({}, "carries no 'parameters' object"),
        ({"parameters": {"a": 1}}, r"\['a'\] do not match the study's \['a', 'b'\]"),
        ({"parameters": {"a": 1, "b": 2, "c": 3}}, "do not match"),
        ({"parameters": {"a": "x", "b": 2}}, "non-numeric"),
        ({"parameters": {"a": float("nan"), "b": 2}}, "non-finite"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            parameters_from_hello(body, ["a", "b"], 3)


def test_parameters_are_scaled_from_their_distributions() -> None:
    scaler = ParameterScaler([
        UniformParameter(name="u", distribution="uniform", low=2.0, high=6.0),
        LogUniformParameter(name="l", distribution="loguniform", low=0.01, high=1.0),
        NormalParameter(name="n", distribution="normal", mean=10.0, std=2.0),
    ])
    scaled = scaler(np.array([[2.0, 0.01, 10.0], [6.0, 1.0, 14.0], [4.0, 0.1, 8.0]]))
    np.testing.assert_allclose(scaled, [[0, 0, 0], [1, 1, 2], [0.5, 0.5, -1]], atol=1e-12)
    assert time_input(0, 5) == 0 and time_input(4, 5) == 1 and time_input(0, 1) == 0
