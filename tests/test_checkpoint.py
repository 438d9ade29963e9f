import os
import pickle

import numpy as np
import pytest

from exprvm.train import checkpoint, solvers
from exprvm.errors import CheckpointError


class Param:
    """A plain holder of the attributes checkpoints and solvers read."""

    def __init__(self, name, value, grad=None):
        self.name = name
        self.value = value
        self.grad = grad


def model(seed=0):
    rng = np.random.default_rng(seed)
    return [
        Param("encoder.layer0/W", rng.normal(size=(4, 3)).astype(np.float32)),
        Param("encoder.layer0/b", rng.normal(size=4).astype(np.float32)),
        Param("head.W", rng.normal(size=(2, 4))),                    # float64
        Param("temperature", np.array(1.5)),                          # a scalar
    ]


def test_round_trip_keeps_names_values_and_dtypes(tmp_path):
    params = model()
    path = tmp_path / "m.npz"
    checkpoint.save(path, params)
    loaded = checkpoint.load(path)
    assert isinstance(loaded, dict)
    assert list(loaded) == [p.name for p in params]
    for p in params:
        assert loaded[p.name].dtype == p.value.dtype
        assert loaded[p.name].shape == p.value.shape
        np.testing.assert_array_equal(loaded[p.name], p.value)


def test_names_are_stored_as_data_not_as_archive_paths(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, {"a/../../b": np.ones(2), "x.npy": np.zeros(1), "ü/ß": np.arange(3)})
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw["__names__"].tolist()) == ["a/../../b", "x.npy", "ü/ß"]
        assert all("/" not in member for member in raw.files)
    loaded = checkpoint.load(path)
    assert sorted(loaded) == ["a/../../b", "x.npy", "ü/ß"]
    np.testing.assert_array_equal(loaded["ü/ß"], np.arange(3))


def test_dict_of_arrays_or_objects(tmp_path):
    path = tmp_path / "m.npz"
    w = Param("not-this-name", np.ones(3))
    checkpoint.save(path, {"w": w, "b": np.full(2, 7.0)})
    loaded = checkpoint.load(path)
    np.testing.assert_array_equal(loaded["w"], np.ones(3))
    np.testing.assert_array_equal(loaded["b"], [7.0, 7.0])


def test_load_into_params_in_place(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model(seed=1))
    params = model(seed=2)
    arrays = [p.value for p in params]
    checkpoint.load(path, params)
    for p, arr, saved in zip(params, arrays, model(seed=1)):
        assert p.value is arr
        np.testing.assert_array_equal(p.value, saved.value)

    plain = {"head.W": np.zeros((2, 4))}      # a dict name -> array is filled in place too
    checkpoint.load(path, plain)
    np.testing.assert_array_equal(plain["head.W"], model(seed=1)[2].value)


@pytest.mark.parametrize("change", ["shape", "dtype", "name"])
def test_mismatch_names_the_parameter_and_copies_nothing(tmp_path, change):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model(seed=1))
    params = model(seed=2)
    before = [p.value.copy() for p in params]
    last = params[-1]
    if change == "shape":
        last.value = np.zeros(3)
    elif change == "dtype":
        last.value = last.value.astype(np.float32)
    else:
        last.name = "temperature2"
    with pytest.raises(CheckpointError, match=last.name):
        checkpoint.load(path, params)
    for p, b in zip(params[:-1], before):
        np.testing.assert_array_equal(p.value, b)


def test_parameters_not_asked_for_are_ignored(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model())
    head = Param("head.W", np.zeros((2, 4)))
    checkpoint.load(path, [head])
    np.testing.assert_array_equal(head.value, model()[2].value)


def test_bad_names_refuse_to_save_and_write_nothing(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(CheckpointError, match="'w'"):
        checkpoint.save(path, [Param("w", np.ones(1)), Param("w", np.ones(2))])
    with pytest.raises(CheckpointError, match="no name"):
        checkpoint.save(path, [Param(None, np.ones(1))])
    with pytest.raises(CheckpointError, match="no name"):
        checkpoint.save(path, [np.ones(1)])
    with pytest.raises(CheckpointError, match="no name"):
        checkpoint.save(path, {"": np.ones(1)})
    assert os.listdir(tmp_path) == []


# -- sections: resume a training run from one file ---------------------------------

def train(params, opt, steps, rng):
    for _ in range(steps):
        for p in params:
            p.grad = rng.normal(size=p.value.shape).astype(p.value.dtype)
        opt.step(params)


def test_params_solver_state_and_step_counter_resume_exactly(tmp_path):
    path = tmp_path / "run.npz"
    params, opt = model(), solvers.Adam(lr=0.01, clip_norm=5.0)
    train(params, opt, 3, np.random.default_rng(0))
    checkpoint.save(path, params, solver=opt.state_dict(), meta={"step": 3, "note": "char-rnn"})

    resumed, opt2 = model(seed=9), solvers.Adam(lr=0.01, clip_norm=5.0)
    ck = checkpoint.load(path, resumed)
    opt2.load_state_dict(ck.section("solver"), resumed)
    assert int(ck.section("meta")["step"]) == 3
    assert str(ck.section("meta")["note"]) == "char-rnn"

    train(params, opt, 4, np.random.default_rng(1))
    train(resumed, opt2, 4, np.random.default_rng(1))
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(p.value, q.value)


def test_section_errors(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(CheckpointError, match="reserved"):
        checkpoint.save(path, [], params={"x": np.ones(1)})
    with pytest.raises(CheckpointError, match="meta"):
        checkpoint.save(path, [], meta=[1, 2])
    checkpoint.save(path, model())
    with pytest.raises(CheckpointError, match="solver"):
        checkpoint.load(path).section("solver")


def test_plain_npz_loads_as_parameters(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, W=np.eye(2), b=np.zeros(2, np.float32))
    loaded = checkpoint.load(path)
    assert sorted(loaded) == ["W", "b"] and loaded.sections == {}
    assert loaded["b"].dtype == np.float32


# -- atomic writes -------------------------------------------------------------------

def write_old(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, model(seed=1))
    return path, path.read_bytes()


def broken_savez(file, *args, **kwargs):
    file.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path, old = write_old(tmp_path)
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(CheckpointError, match="No space left"):
        checkpoint.save(path, model(seed=2))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.npz"]


def test_interrupt_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path, old = write_old(tmp_path)

    def interrupted(file, *args, **kwargs):
        file.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, model(seed=2))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.npz"]


def test_fsync_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path, old = write_old(tmp_path)

    def no_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(CheckpointError):
        checkpoint.save(path, model(seed=2))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.npz"]


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    checkpoint.save(tmp_path / "m.npz", model())
    assert events[:2] == ["fsync", "replace"]


def test_replacing_keeps_the_file_mode(tmp_path):
    path, _ = write_old(tmp_path)
    os.chmod(path, 0o640)
    checkpoint.save(path, model(seed=2))
    assert os.stat(path).st_mode & 0o777 == 0o640


# -- damaged and hostile files ---------------------------------------------------------

def test_corrupt_files_raise_checkpoint_error(tmp_path):
    path, good = write_old(tmp_path)
    bad = tmp_path / "bad.npz"
    middle = len(good) // 2
    flipped = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:]
    npy = tmp_path / "single.npy"
    np.save(npy, np.ones(3))
    cases = [good[: len(good) // 2], good[:10], b"", b"not a checkpoint at all\n", flipped]
    for content in cases:
        bad.write_bytes(content)
        with pytest.raises(CheckpointError):
            checkpoint.load(bad)
    with pytest.raises(CheckpointError):
        checkpoint.load(npy)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")


class LeavesAMark:
    """Unpickling this object would create a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused_unrun(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npz"
    np.savez(path, W=np.array([LeavesAMark(marker)], dtype=object))
    with pytest.raises(CheckpointError, match="allow_pickle"):
        checkpoint.load(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(LeavesAMark(marker)))
    with pytest.raises(CheckpointError):
        checkpoint.load(raw)
    assert not marker.exists()


def test_object_arrays_are_refused_on_save(tmp_path):
    with pytest.raises(CheckpointError, match="objects"):
        checkpoint.save(tmp_path / "m.npz", {"w": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="objects"):
        checkpoint.save(tmp_path / "m.npz", [], meta={"cfg": {"a": 1}})


def _corrupt(good, rng):
    """A damaged copy of a file: bits flipped, cut short, or a run of bytes zeroed."""
    data = bytearray(good)
    kind = rng.integers(3)
    if kind == 0:
        for pos in rng.integers(0, len(data), size=rng.integers(1, 9)):
            data[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del data[int(rng.integers(0, len(data))):]
    else:
        start, n = int(rng.integers(0, len(data))), int(rng.integers(1, 65))
        data[start:start + n] = bytes(len(data[start:start + n]))
    return bytes(data)


def test_four_hundred_corrupted_copies_raise_checkpoint_error_or_load_intact(tmp_path):
    path = tmp_path / "ckpt.npz"
    params = model()
    checkpoint.save(path, params, solver={"t": np.array(3)})
    good = path.read_bytes()
    want = {p.name: p.value.copy() for p in params}
    rng = np.random.default_rng(26)
    bad = tmp_path / "damaged.npz"
    outcomes = {"error": 0, "intact": 0}
    for trial in range(400):
        bad.write_bytes(_corrupt(good, rng))
        try:
            got = checkpoint.load(bad)
        except CheckpointError as e:
            assert str(bad) in str(e), (trial, str(e))
            outcomes["error"] += 1
            continue
        # what loads must be the data saved: a corruption never passes as other values
        assert set(got) == set(want), trial
        for name, value in want.items():
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value), (trial, name)
        outcomes["intact"] += 1
    assert outcomes["error"] > 300, outcomes
    # the end-of-archive record's counts and sizes zeroed: zipfile reads no members
    eocd = good.rindex(b"PK\x05\x06")
    bad.write_bytes(good[:eocd + 8] + bytes(12) + good[eocd + 20:])
    with pytest.raises(CheckpointError, match="holds no arrays"):
        checkpoint.load(bad)
