"""Crash-safe writers (pyfastopt._fileio.atomic_write and every writer built on it).

Issue 16 point 1: kill -9 during a save must leave the previous file intact; concurrent
saves to one path must not collide; a failed save removes its temporary file; a killed
save's temporary file is removed by the next save to that path.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pyfastopt import _fileio, nn, optim, quant

TEMP = _fileio.TEMP_SUFFIX


def temps(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(TEMP))


# ----------------------------------------------------------------------- atomic_write
def test_atomic_write_replaces_and_cleans(tmp_path):
    path = tmp_path / "f.bin"
    assert _fileio.atomic_write_bytes(path, b"one") == 3
    assert path.read_bytes() == b"one"
    with _fileio.atomic_write(path) as fh:
        fh.write(b"two")
        assert path.read_bytes() == b"one"  # not visible before the block ends
        assert len(temps(tmp_path)) == 1
    assert path.read_bytes() == b"two"
    assert temps(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, exc):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def interrupted_save():
        with _fileio.atomic_write(path) as fh:
            fh.write(b"half of the new")
            raise exc("interrupted")

    with pytest.raises(exc):
        interrupted_save()
    assert path.read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_missing_folder_is_oserror_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError), _fileio.atomic_write(tmp_path / "no" / "f"):
        pass
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="path"), _fileio.atomic_write(""):
        pass


def test_permissions_are_kept_or_follow_the_umask(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    _fileio.atomic_write_bytes(path, b"new")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    mask = os.umask(0o022)
    os.umask(mask)
    fresh = tmp_path / "g.bin"
    _fileio.atomic_write_bytes(fresh, b"x")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~mask


def test_a_symlink_target_is_written_through(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    _fileio.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_live_writers_temp_is_not_removed(tmp_path):
    """Another process's unfinished save: its locked temp survives our cleanup; once that
    process is killed, the next cleanup (or save) removes it."""
    path = tmp_path / "f.bin"
    code = (
        "import sys, time\nfrom pyfastopt import _fileio\n"
        "with _fileio.atomic_write(sys.argv[1]) as fh:\n"
        "    fh.write(b'partial'); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        (temp,) = temps(tmp_path)
        assert _fileio.remove_stale_temps(path) == []
        assert temps(tmp_path) == [temp]
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert _fileio.remove_stale_temps(path) == [str(tmp_path / temp)]
    assert temps(tmp_path) == [] and not path.exists()


def test_cleanup_leaves_other_files_alone(tmp_path):
    path = tmp_path / "f.bin"
    keep = [
        "f.bin.notatemp",
        "g.bin.0123abcd" + TEMP,  # another target's temp
        "f.bin.0123abcz" + TEMP,  # not a token we make
        "f.bin" + TEMP,
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    stale = tmp_path / ("f.bin.0123abcd" + TEMP)
    stale.write_bytes(b"x")
    assert _fileio.remove_stale_temps(path) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


# --------------------------------------------------------------- kill -9 during a save
_SAVER = r"""
import os, sys, time
import numpy as np
from pyfastopt import optim
path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = np.zeros(n, np.float32)
opt = optim.SGD([p], lr=0.1, momentum=0.9)
opt.step([np.full(n, 3.0, np.float32)])  # the new checkpoint: momentum 3.0
sd = opt.state_dict()
if mode == "mid-write":  # stall after the first member is written
    import numpy.lib.format as fmt
    real = fmt.write_array
    def stalled(fp, arr, *a, **k):
        real(fp, arr, *a, **k)
        print("stalled", flush=True)
        time.sleep(60)
    fmt.write_array = stalled
elif mode == "before-rename":  # stall with the whole temp file written and synced
    def stalled(src, dst):
        print("stalled", flush=True)
        time.sleep(60)
    os.replace = stalled
print("saving", flush=True)
while True:
    optim.save_state_dict(sd, path)
"""


def _old_checkpoint(path, n):
    p = np.zeros(n, np.float32)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step([np.ones(n, np.float32)])  # the old checkpoint: momentum 1.0
    optim.save_state_dict(opt.state_dict(), path)


def _momentum(path):
    sd = optim.load_state_dict_file(path)
    buf = sd["state"][0]["momentum_buffer"]
    values = np.unique(buf)
    assert values.size == 1, "a mixture of two checkpoints"
    return float(values[0])


def _run_and_kill(path, n, mode, delay=None):
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", _SAVER, str(path), str(n), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "saving"
        if delay is None:
            assert child.stdout.readline().strip() == "stalled"
        else:
            time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_kill_9_during_save_keeps_the_previous_checkpoint(tmp_path, mode):
    path = tmp_path / "opt.npz"
    n = 200_000
    _old_checkpoint(path, n)
    _run_and_kill(path, n, mode)
    assert _momentum(path) == 1.0  # the previous checkpoint, whole
    # what a kill -9 leaves: one unreferenced temp, named after the target
    (temp,) = temps(tmp_path)
    assert temp.startswith("opt.npz.")
    # the next save to that path removes it
    _old_checkpoint(path, n)
    assert temps(tmp_path) == []
    assert _momentum(path) == 1.0


def test_kill_9_at_any_time_leaves_a_whole_checkpoint(tmp_path):
    """Kill a process saving in a loop at several moments: the file is always one whole
    checkpoint (the old or a new one), never truncated or mixed."""
    path = tmp_path / "opt.npz"
    n = 2_000_000  # 8 MB per array: each save takes a few ms
    _old_checkpoint(path, n)
    seen = set()
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1):
        _run_and_kill(path, n, "loop", delay)
        seen.add(_momentum(path))
        assert len(temps(tmp_path)) <= 1
    assert seen <= {1.0, 3.0}


# ------------------------------------------------------ concurrent saves to one path
def _hammer(save, n_threads=2, repeats=100):
    errors = []

    def work():
        for _ in range(repeats):
            try:
                save()
            except Exception as exc:  # pragma: no cover - the failure being tested
                errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_threads_saving_one_quant_model_path(tmp_path):
    model = nn.Sequential(nn.Linear(20, 10, seed=0), nn.ReLU(), nn.Linear(10, 3, seed=1))
    qm = quant.quantize_model(model)
    path = tmp_path / "m.pfq"
    assert _hammer(lambda: qm.save(path)) == []
    x = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    assert quant.load(path)(x).tobytes() == qm(x).tobytes()
    assert temps(tmp_path) == []


def test_two_threads_saving_one_checkpoint_path(tmp_path):
    p = np.arange(1000, dtype=np.float32)
    opt = optim.Adam([p])
    opt.step([np.ones_like(p)])
    sd = opt.state_dict()
    path = tmp_path / "c.npz"
    assert _hammer(lambda: optim.save_state_dict(sd, path)) == []
    back = optim.load_state_dict_file(path)
    np.testing.assert_array_equal(back["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])
    assert temps(tmp_path) == []


def test_save_state_dict_writes_the_exact_path_and_file_objects(tmp_path):
    p = np.ones(3, np.float32)
    opt = optim.SGD([p], lr=0.1)
    opt.step([p.copy()])
    optim.save_state_dict(opt.state_dict(), tmp_path / "ckpt")  # no ".npz" appended
    assert os.listdir(tmp_path) == ["ckpt"]
    assert optim.load_state_dict_file(tmp_path / "ckpt")["state"][0]["step"] == 1
    with open(tmp_path / "via_fh.npz", "wb") as fh:
        optim.save_state_dict(opt.state_dict(), fh)
    assert optim.load_state_dict_file(tmp_path / "via_fh.npz")["state"][0]["step"] == 1


def test_numpy_scalars_in_param_groups_are_saved_as_numbers(tmp_path):
    p = np.ones(3, np.float32)
    opt = optim.SGD([p], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = np.float32(0.5)
    sd["param_groups"][0]["initial_lr"] = np.array(0.25)
    optim.save_state_dict(sd, tmp_path / "c.npz")
    back = optim.load_state_dict_file(tmp_path / "c.npz")["param_groups"][0]
    assert back["lr"] == 0.5 and back["initial_lr"] == 0.25
