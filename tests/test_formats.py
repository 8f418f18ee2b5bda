"""One module per file kind (featinv_cli/formats/): `info` describes a file through its kind's own
checks, so what a reader refuses, `info` refuses too, in the same words."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import one_line_error
from featinv_cli.errors import FeatinvError
from featinv_cli.formats import KINDS, describe
from featinv_cli.formats.checkpoint import CHECKPOINT_FORMAT, peek
from featinv_cli.formats.model import MODEL_FORMAT, load_model
from featinv_cli.formats.statistics import STATS_FORMAT, stats_from_bytes
from featinv_cli.safetensors_codec import encode_safetensors

MODEL = {"format": MODEL_FORMAT, "feature": "hog", "params": "{}", "arch": '{"name": "paper", "form": "dense"}',
         "normalization": "{}"}
STATS = {"format": STATS_FORMAT, "feature": "hog", "params": "{}", "shape": "[31, 8, 8]", "fitted_on": "4"}
CHECKPOINT = {"format": CHECKPOINT_FORMAT, "step": "10", "config": json.dumps({"feature": "hog"}), "extra": "{}"}


def read_model(path):
    return load_model(path)


def read_stats(path):
    return stats_from_bytes(path.read_bytes(), str(path))


TAMPERED = [
    ("model", MODEL, {"arch": None}, read_model, "lacks 'arch'"),
    ("model", MODEL, {"arch": '{"form": "dense"}'}, read_model, "must name an architecture"),
    ("stats", STATS, {"shape": "[-31, 8, 8]"}, read_stats, "no valid feature shape"),
    ("stats", STATS, {"fitted_on": "-4"}, read_stats, "fitted_on must be a whole number"),
    ("checkpoint", CHECKPOINT, {"step": "ten"}, peek, "the checkpoint is damaged"),
    ("checkpoint", CHECKPOINT, {"config": "[]"}, peek, "the checkpoint is damaged"),
]


def write(path, meta: dict, edit: dict) -> None:
    meta = {k: v for k, v in {**meta, **edit}.items() if v is not None}
    path.write_bytes(encode_safetensors({"w": torch.zeros(2)}, meta))


@pytest.mark.parametrize("kind, meta, edit, read, message", TAMPERED, ids=[f"{t[0]}-{i}" for i, t in enumerate(TAMPERED)])
def test_info_refuses_what_the_reader_refuses(cli, tmp_path, kind, meta, edit, read, message):
    path = tmp_path / f"{kind}.safetensors"
    write(path, meta, {})
    assert describe(str(path))["file"] == str(path)  # untampered: described
    read(path)
    write(path, meta, edit)
    with pytest.raises(FeatinvError) as refused:
        read(path)
    assert message in str(refused.value)
    assert message in one_line_error(cli("info", path))


def test_every_kind_in_the_registry_describes_and_tells_its_own_files(tmp_path):
    for fmt, kind in KINDS.items():
        assert kind.format == fmt and kind.describe is not None
    path = tmp_path / "m.safetensors"
    write(path, MODEL, {})
    assert KINDS[MODEL_FORMAT].ours(path) and not KINDS[STATS_FORMAT].ours(path)


def test_info_of_a_safetensors_file_imports_no_torch():
    """The header alone is read (0.4 s, where importing torch takes over a second)."""
    import subprocess
    import sys
    from pathlib import Path

    model = Path(__file__).resolve().parent.parent / "featinv_cli" / "assets" / "hog.safetensors"
    code = ("import sys; from featinv_cli.cli import main; sys.argv = ['featinv', 'info', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=60)
    assert run.stderr.strip().splitlines()[-1] == "False", run.stderr
