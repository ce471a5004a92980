"""Optimizer checkpoint files: corrupt, truncated or foreign files give ValueError (never
code execution: files are read with allow_pickle=False); good files round-trip."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from pyfastopt.optim import SGD, Adam, load_state_dict_file, save_state_dict


@pytest.fixture
def saved(tmp_path):
    p = np.arange(10, dtype=np.float32)
    opt = Adam([p], lr=1e-2, amsgrad=True)
    for _ in range(3):
        opt.step([np.ones(10, np.float32)])
    path = tmp_path / "opt.npz"
    save_state_dict(opt.state_dict(), path)
    return path, opt


def test_round_trip_keeps_types(saved):
    path, opt = saved
    sd = load_state_dict_file(path)
    assert sd["state"][0]["step"] == 3 and isinstance(sd["state"][0]["step"], int)
    assert sd["state"][0]["exp_avg"].dtype == np.float32
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_array_equal(sd["state"][0][k], opt.state[0][k])


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_garbage_files(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint"):
        load_state_dict_file(path)


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            load_state_dict_file(bad)


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a pyfastopt optimizer checkpoint"):
        load_state_dict_file(path)


def header_bytes(obj):
    return np.frombuffer(json.dumps(obj).encode(), np.uint8)


def test_inconsistent_header(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(
        path,
        __header__=header_bytes(
            {
                "format": "pyfastopt.optim.state_dict",
                "version": 1,
                "param_groups": [],
                "state": {"0": {"exp_avg": None}},
            }
        ),
    )
    with pytest.raises(ValueError, match="inconsistent"):
        load_state_dict_file(path)
    np.savez(
        path,
        __header__=header_bytes(
            {"format": "pyfastopt.optim.state_dict", "version": 99, "param_groups": [], "state": {}}
        ),
    )
    with pytest.raises(ValueError, match="unsupported checkpoint version"):
        load_state_dict_file(path)
    np.savez(path, __header__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(ValueError, match="corrupt checkpoint header"):
        load_state_dict_file(path)


def test_pickled_arrays_are_refused(tmp_path):
    # an object array would need pickle to load: it must be refused, not executed
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("__header__.npy", "w") as f:
            np.lib.format.write_array(
                f,
                header_bytes(
                    {
                        "format": "pyfastopt.optim.state_dict",
                        "version": 1,
                        "param_groups": [],
                        "state": {"0": {"exp_avg": None}},
                    }
                ),
            )
        with z.open("state/0/exp_avg.npy", "w") as f:
            np.lib.format.write_array(f, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_state_dict_file(path)


def test_loading_into_mismatched_optimizer(saved):
    path, _ = saved
    sd = load_state_dict_file(path)
    with pytest.raises(ValueError, match="shape"):
        Adam([np.zeros(11, np.float32)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="dtype"):
        Adam([np.zeros(10)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="param groups"):
        Adam(
            [{"params": [np.zeros(10, np.float32)]}, {"params": [np.zeros(2, np.float32)]}]
        ).load_state_dict(sd)
    with pytest.raises(ValueError, match="unknown entry"):
        SGD([np.zeros(10, np.float32)], lr=0.1, momentum=0.9).load_state_dict(sd)
    sd["state"][0]["step"] = -1
    with pytest.raises(ValueError, match="step"):
        Adam([np.zeros(10, np.float32)]).load_state_dict(sd)
