"""build_predictor: model names, configs, strict checkpoint loading, and its errors."""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from sam2prune import build_predictor
from sam2prune.cli import main
from sam2prune.errors import CheckpointError, InputError
from sam2prune.models import MODELS, guess_model
from sam2prune.predictor import baseline as predictor_module
from sam2prune.scoped import seeded

from conftest import CHAIR_FRAMES, TINY_SIZE, build_random


@pytest.mark.parametrize("model", ["sam2.1_hiera_t", "sam2_hiera_t"])
def test_official_names_build_the_video_predictor_api(model):
    predictor = build_random(model=model)
    assert isinstance(predictor, SAM2VideoPredictor)
    assert predictor.image_size == TINY_SIZE
    assert predictor.sam_image_embedding_size == TINY_SIZE // 16
    for method in ("init_state", "add_new_points_or_box", "add_new_mask", "propagate_in_video", "reset_state"):
        assert callable(getattr(predictor, method))
    # sam2.1 configs have the spatial no-object embedding, sam2 ones do not
    assert (predictor.no_obj_embed_spatial is not None) == model.startswith("sam2.1")


def test_default_image_size_is_the_config_s():
    import sam2

    # building at 1024 is cheap (random init); running it is what is slow
    predictor = build_predictor("sam2.1_hiera_t", random_weights=True)
    assert predictor.image_size == 1024
    assert Path(sam2.__file__).parent.joinpath(MODELS["sam2.1_hiera_t"].config).is_file()


def test_yaml_path_builds_the_same_architecture(tmp_path):
    import sam2

    yaml = tmp_path / "my_tiny.yaml"
    shutil.copy(Path(sam2.__file__).parent / "configs/sam2.1/sam2.1_hiera_t.yaml", yaml)
    torch.manual_seed(0)
    from_path = build_predictor(str(yaml), random_weights=True, image_size=TINY_SIZE)
    reference = build_random()
    assert from_path.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert from_path.state_dict()[key].shape == value.shape, key


def test_every_official_name_resolves_to_a_config():
    from sam2prune.models import resolve_config

    for name, spec in MODELS.items():
        resolved_spec, path = resolve_config(name)
        assert resolved_spec is spec and path.is_file(), name


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match=r"unknown model 'sam3_hiera_t'.*sam2\.1_hiera_t"):
        build_predictor("sam3_hiera_t", random_weights=True)
    with pytest.raises(InputError, match="does not exist"):
        build_predictor("/nowhere/config.yaml", random_weights=True)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"foo: [\n", r"cannot be read as YAML: while parsing a flow node .* line 2"),
        (b"\xff\xfe\x00model", "cannot be read as YAML: 'utf-8' codec can't decode"),
        (b"model: 5\n", "is not a SAM 2 model config \\(it has no 'model' section\\)"),
        (b"model:\n  _target_: sam2.modeling.sam2_base.SAM2Base\n", "sam2 cannot build a model from it: .*missing"),
    ],
)
def test_a_bad_model_config_is_a_clear_error(tmp_path, capsys, text, message):
    config = tmp_path / "my.yaml"
    config.write_bytes(text)
    with pytest.raises(InputError, match=message):
        build_predictor(str(config), random_weights=True, image_size=TINY_SIZE)
    frames = ["segment", str(CHAIR_FRAMES), "--point", "5,5", "--out", str(tmp_path / "o"), "--random-weights"]
    assert main([*frames, "--model", str(config)]) == 2
    error = capsys.readouterr().err
    assert re.search(f"sam2prune: error: .*{message}", error) and "Traceback" not in error


def test_an_uncertainty_block_the_model_lacks_is_a_clear_error(tmp_path, capsys):
    frames = ["segment", str(CHAIR_FRAMES), "--point", "5,5", "--out", str(tmp_path / "o"), "--random-weights"]
    assert main([*frames, "--image-size", str(TINY_SIZE), "--uncertainty-blocks", "3,99"]) == 2
    assert "error: --uncertainty-blocks: block 99 does not exist: this Hiera has 12 blocks (0..11)" in (
        capsys.readouterr().err
    )


def test_missing_checkpoint_names_the_official_file_and_where_to_get_it():
    with pytest.raises(CheckpointError) as raised:
        build_predictor("sam2.1_hiera_b+")
    message = str(raised.value)
    assert "sam2.1_hiera_base_plus.pt" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt" in message
    assert "random_weights=True" in message


def test_checkpoint_and_random_weights_exclude_each_other(tmp_path):
    with pytest.raises(InputError, match="not both"):
        build_predictor(checkpoint=tmp_path / "x.pt", random_weights=True)


@pytest.mark.parametrize("size", [100, 240, 32, 0])
def test_bad_image_size(size):
    with pytest.raises(InputError, match="multiple of 32"):
        build_predictor(random_weights=True, image_size=size)


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available"):
        build_predictor(random_weights=True, image_size=TINY_SIZE, device="cuda")


def test_checkpoint_round_trip_loads_identical_weights(tmp_path):
    original = build_random(seed=3)
    path = tmp_path / "tiny.pt"
    torch.save({"model": original.state_dict()}, path)
    loaded = build_predictor(checkpoint=path, image_size=TINY_SIZE)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    other = build_random(seed=4)
    assert not all(torch.equal(other.state_dict()[k], v) for k, v in original.state_dict().items())


def test_checkpoint_of_another_model_reports_counts_and_what_it_looks_like(tmp_path):
    sam2_v1 = build_random(model="sam2_hiera_t")
    path = tmp_path / "sam2_hiera_t.pt"
    torch.save({"model": sam2_v1.state_dict()}, path)
    with pytest.raises(CheckpointError) as raised:
        build_predictor("sam2.1_hiera_t", checkpoint=path, image_size=TINY_SIZE)
    message = str(raised.value)
    assert "does not fit model sam2.1_hiera_t" in message
    assert "looks like sam2_hiera_t" in message
    missing = [k for k in build_random().state_dict() if k not in sam2_v1.state_dict()]
    assert f"{len(missing)} missing" in message and len(missing) > 0


def test_guess_model_recognises_official_architectures():
    assert guess_model(build_random(model="sam2.1_hiera_t").state_dict()) == "sam2.1_hiera_t"
    assert guess_model(build_random(model="sam2_hiera_t").state_dict()) == "sam2_hiera_t"
    assert guess_model({"foo": torch.zeros(1)}) is None


def test_unreadable_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint file"):
        build_predictor(checkpoint=garbage, image_size=TINY_SIZE)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_predictor(checkpoint=tmp_path / "absent.pt", image_size=TINY_SIZE)
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        build_predictor(checkpoint=not_a_state_dict, image_size=TINY_SIZE)


def test_missing_cuda_extension_is_reported_once_not_per_frame(monkeypatch, caplog):
    if predictor_module.cuda_extension_available():
        pytest.skip("sam2._C is installed here")
    monkeypatch.setattr(predictor_module, "_reported_missing_extension", False)
    with caplog.at_level(logging.WARNING, logger="sam2prune"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            predictor = build_random()
            state = predictor.init_state(CHAIR_FRAMES)
            predictor.add_new_points_or_box(state, 0, 1, points=[[300, 250]], labels=[1])
            frames = [frame for frame, _, _ in predictor.propagate_in_video(state)]
            assert len(frames) == 6
    reports = [r for r in caplog.records if "sam2._C" in r.getMessage()]
    assert len(reports) == 1
    assert not [w for w in caught if "_C" in str(w.message)]


def test_seeded_draws_from_its_seed_and_leaves_the_callers_rng_as_it_was():
    """Random initial weights (models, random routers) are drawn inside ``seeded``."""
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(3)
    with seeded(7):
        again = torch.rand(3)
    assert torch.equal(first, again) and not torch.equal(first, expected_next)
    assert torch.equal(torch.rand(3), expected_next)


def _tiny_yaml_at(tmp_path: Path, image_size: int) -> Path:
    import sam2

    text = (Path(sam2.__file__).parent / MODELS["sam2.1_hiera_t"].config).read_text()
    config = tmp_path / "my.yaml"
    config.write_text(re.sub(r"image_size: \d+", f"image_size: {image_size}", text))
    return config


def test_a_yaml_image_size_is_checked_before_building(tmp_path, monkeypatch, capsys):
    """A YAML's image_size of 100 was built and loaded, then failed inside hieradet on the first frame."""
    from sam2prune import models
    from sam2prune.models import model_input_size

    config = _tiny_yaml_at(tmp_path, 100)
    expected = f"model.image_size in {config} must be a multiple of 32 and >= 64, got 100"
    with pytest.raises(InputError) as raised:
        model_input_size(str(config))
    assert str(raised.value) == expected
    assert model_input_size(str(config), TINY_SIZE) == TINY_SIZE  # --image-size overrides it
    monkeypatch.setattr(models, "_instantiate", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(InputError) as raised:
        build_predictor(str(config), random_weights=True)
    assert str(raised.value) == expected
    argv = ["segment", str(CHAIR_FRAMES), "--point", "5,5", "--out", str(tmp_path / "o"), "--random-weights"]
    assert main([*argv, "--model", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"sam2prune: error: {expected}" in error and "Traceback" not in error
    monkeypatch.undo()
    assert build_predictor(str(config), random_weights=True, image_size=TINY_SIZE).image_size == TINY_SIZE


def test_a_state_dict_that_does_not_fit_is_named_by_its_source():
    """A state dict shipped to a Ray worker was named "(state dict)", not the file it came from."""
    state_dict = build_random(model="sam2_hiera_t").state_dict()
    with pytest.raises(CheckpointError, match=r"^checkpoint ck/sam2_hiera_tiny\.pt does not fit model sam2\.1_hiera_t"):
        build_predictor(checkpoint=state_dict, checkpoint_source="ck/sam2_hiera_tiny.pt", image_size=TINY_SIZE)
    with pytest.raises(CheckpointError, match=r"^checkpoint \(state dict\) does not fit model sam2\.1_hiera_t"):
        build_predictor(checkpoint=state_dict, image_size=TINY_SIZE)


def test_a_checkpoint_of_the_right_architecture_with_other_keys_says_its_keys_differ(tmp_path):
    """It said "does not fit model sam2.1_hiera_t ...; it looks like sam2.1_hiera_t"."""
    state_dict = build_random().state_dict()
    del state_dict["no_obj_ptr"]
    state_dict["adapter.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as raised:
        build_predictor(checkpoint=state_dict, image_size=TINY_SIZE)
    message = str(raised.value)
    assert message.startswith("checkpoint (state dict) does not fit model sam2.1_hiera_t: 1 missing, 1 unexpected")
    assert "looks like" not in message
    assert "keys differ from the official sam2.1_hiera_t's (a modified or fine-tuned model?)" in message
    assert "missing no_obj_ptr" in message and "unexpected adapter.weight" in message


def test_a_safetensors_file_is_recognised_and_the_official_file_named(tmp_path):
    """The transformers-layout model.safetensors of facebook/sam2*-hf was told "download it again"."""
    import json
    import struct

    header = json.dumps({"vision_encoder.neck.conv.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\x00" * 4)
    with pytest.raises(CheckpointError) as raised:
        build_predictor("sam2.1_hiera_s", checkpoint=path, image_size=TINY_SIZE)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {path} is a safetensors file")
    assert "sam2prune reads SAM 2's official .pt checkpoints" in message
    assert MODELS["sam2.1_hiera_s"].checkpoint_url in message
    assert "download it again" not in message and "stopped short" not in message


def test_a_corrupt_pickle_is_called_corrupt_and_python_objects_unsafe(tmp_path):
    """A corrupt pickle inside the zip was reported as holding Python objects, not loaded for safety."""
    path = tmp_path / "corrupt.pt"
    torch.save({"model": {"weight": torch.zeros(3)}}, path)
    data = bytearray(path.read_bytes())
    start = data.find(b"\x80\x02")  # the pickle of data.pkl, stored uncompressed
    data[start + 2 : start + 6] = b"\x00" * 4
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as raised:
        build_predictor(checkpoint=path, image_size=TINY_SIZE)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {path} is a corrupt PyTorch file")
    assert "safety" not in message and "weights_only" not in message
    unsafe = tmp_path / "objects.pt"
    torch.save({"model": {"weight": torch.zeros(1)}, "extra": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors, which are not loaded for safety"):
        build_predictor(checkpoint=unsafe, image_size=TINY_SIZE)
    # a valid file of another pickle protocol was called corrupt (the safe loader reads protocol 2)
    newer = tmp_path / "protocol4.pt"
    torch.save({"model": {"weight": torch.zeros(1)}}, newer, pickle_protocol=4)
    with pytest.raises(CheckpointError) as raised:
        build_predictor(checkpoint=newer, image_size=TINY_SIZE)
    assert str(raised.value).startswith(
        f"checkpoint {newer} was written with pickle protocol 4, which torch's safe loader (weights_only) does not read"
    )
    assert "save it again with torch.save's default protocol" in str(raised.value)


def test_a_folder_as_checkpoint_is_called_a_folder(tmp_path):
    from sam2prune.models import read_checkpoint

    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(tmp_path)
    assert str(raised.value) == f"checkpoint {tmp_path} is a folder; expected a checkpoint file (.pt)"
