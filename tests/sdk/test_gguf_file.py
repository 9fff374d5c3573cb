"""udrl.gguf_file, the project's one GGUF reader, against gguf-py's reader on real files."""

import numpy as np
import pytest
from gguf import GGUFReader
from udrl.errors import ManifestError
from udrl.gguf_file import read_gguf_header, tensor_bytes
from udrl.model import default_model_path


@pytest.mark.parametrize("which", ["bundled q8_0", "tiny f32"])
def test_metadata_and_every_tensor_read_as_gguf_py_reads_them(which, tiny_artifacts):
    path = default_model_path() if which == "bundled q8_0" else tiny_artifacts["llama"]
    ours, theirs = read_gguf_header(path), GGUFReader(str(path))
    for name, field in theirs.fields.items():
        if not name.startswith("GGUF."):
            assert ours.metadata[name] == field.contents(), name
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, other in zip(ours.tensors, theirs.tensors):
        assert mine.ggml_type == int(other.tensor_type) and list(mine.shape) == [int(d) for d in other.shape]
        assert np.array_equal(tensor_bytes(ours, mine).reshape(-1), other.data.view(np.uint8).reshape(-1)), mine.name


def test_a_truncated_file_is_one_typed_error(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_model_path().read_bytes()[:5000])
    with pytest.raises(ManifestError, match="truncated or corrupted"):
        read_gguf_header(cut)
