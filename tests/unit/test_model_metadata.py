"""Tier 1: reading TFLite metadata, SSD custom options and damaged image files."""

import zipfile

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.imagefile import jpeg_truncated, read_image
from edge_agent.inference.model_metadata import parse_metadata, read_model_metadata
from tests.support.paths import fixture_model


def test_metadata_fixture_is_read():
    meta = read_model_metadata(fixture_model("color_float_metadata.tflite"))
    assert (meta.mean, meta.std) == ((127.5,), (127.5,))
    assert meta.labels == {0: "crimson", 1: "lime", 2: "azure"}
    assert meta.labels_file == "embedded_labels.txt" and meta.postprocess is None


def test_models_without_metadata():
    meta = read_model_metadata(fixture_model("color_uint8.tflite"))
    assert meta.mean is None and meta.labels is None and meta.postprocess is None


def test_ssd_custom_options_are_read():
    options = read_model_metadata(fixture_model("ssd_postprocess.tflite")).postprocess
    assert options["num_classes"] == 3 and options["max_detections"] == 10
    assert options["nms_score_threshold"] == pytest.approx(0.5)


def test_missing_embedded_label_file_is_one_clear_error(tmp_path):
    data = fixture_model("color_float_metadata.tflite").read_bytes()
    model = data[: data.index(b"PK\x03\x04")]  # drop the appended archive
    path = tmp_path / "no_zip.tflite"
    path.write_bytes(model)
    with pytest.raises(ModelError, match="embedded_labels.txt"):
        read_model_metadata(path)


def _damage(data: bytes, how: str) -> bytes:
    """The model with its appended archive's (only) member made unreadable."""
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    out = bytearray(data)
    if how == "compression":  # Deflate64 (9): zipfile has no decompressor for it
        out[local + 8], out[central + 10] = 9, 9
    elif how == "encrypted":  # general purpose flag bit 0
        out[local + 6] |= 1
        out[central + 8] |= 1
    else:  # "short": the sizes claim more bytes than the archive holds
        for field in (local + 18, local + 22, central + 20, central + 24):
            out[field + 2] = 0x7F
    return bytes(out)


@pytest.mark.parametrize("how", ["compression", "encrypted", "short"])
@pytest.mark.parametrize(
    ("name", "member"),
    [("color_float_metadata.tflite", "embedded_labels.txt"), ("yolo_end2end.tflite", None)],
)
def test_a_damaged_appended_archive_is_no_crash(tmp_path, how, name, member):
    path = tmp_path / name
    path.write_bytes(_damage(fixture_model(name).read_bytes(), how))
    if member is None:  # Ultralytics' metadata.json is optional: left out, as when absent
        assert read_model_metadata(path).labels is None
        return
    with pytest.raises(ModelError, match=f"{path}: metadata names label file '{member}'"):
        read_model_metadata(path)


def test_ultralytics_metadata_names(tmp_path):
    data = fixture_model("color_float_metadata.tflite").read_bytes()
    model = data[: data.index(b"PK\x03\x04")]
    path = tmp_path / "ultra.tflite"
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.writestr(
            "embedded_labels.txt", "{'task': 'detect', 'names': {0: 'person', 1: 'bicycle'}}"
        )
    path.write_bytes(model + (tmp_path / "z.zip").read_bytes())
    assert read_model_metadata(path).labels == {0: "person", 1: "bicycle"}


def test_a_label_file_like_a_dict_with_unhashable_keys_is_read_as_labels(tmp_path):
    # Not Ultralytics' dict repr: literal_eval raises TypeError on a list as a key.
    data = fixture_model("color_float_metadata.tflite").read_bytes()
    model = data[: data.index(b"PK\x03\x04")]
    path = tmp_path / "odd.tflite"
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.writestr("embedded_labels.txt", "{['person']: 0}\n")
    path.write_bytes(model + (tmp_path / "z.zip").read_bytes())
    meta = read_model_metadata(path)
    assert (meta.labels, meta.export_task) == ({0: "{['person']: 0}"}, None)


def test_not_metadata_is_refused():
    with pytest.raises(ModelError, match="M001"):
        parse_metadata(b"\x08\x00\x00\x00XXXX\x00\x00\x00\x00")


def test_truncated_jpeg_is_flagged(tmp_path):
    whole = tmp_path / "whole.jpg"
    import cv2
    import numpy as np

    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert cv2.imwrite(str(whole), image)
    data = whole.read_bytes()
    assert not jpeg_truncated(data) and jpeg_truncated(data[: len(data) // 2])
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 3 // 4])
    read = read_image(str(cut))
    assert read.image is not None
    assert any("truncated JPEG" in w for w in read.warnings)
    assert read_image(str(whole)).warnings == ()
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert read_image(str(empty)).error == "cannot read image: the file is empty"
