import coremltools as ct
import pytest
from udrl.artifacts import read_manifest
from udrl.converters import export

QUANTS = ["fp16", "int8", "palette4", "stateful"]


@pytest.fixture(scope="module")
def packages(checkpoint):
    return {q: export(checkpoint, "coreml", q, log=lambda _: None) for q in QUANTS}


@pytest.mark.parametrize("quant", QUANTS)
def test_variants_are_written_and_their_specs_check_out(packages, quant):
    result = packages[quant]
    assert result.path.suffix == ".mlpackage" and result.path.is_dir()
    spec = ct.utils.load_spec(str(result.path))
    inputs = [i.name for i in spec.description.input]
    states = [s.name for s in spec.description.state]
    if quant == "stateful":
        assert inputs == ["input_ids", "causal_mask"] and states == ["key_cache", "value_cache"]
        assert spec.specificationVersion >= 9  # iOS 18
    else:
        assert inputs == ["input_ids"] and states == []
    assert [o.name for o in spec.description.output] == ["logits"]
    assert read_manifest(result.path).quantization == quant
    assert "converted graph in torch" in result.checks


def test_compressed_variants_are_smaller(packages):
    sizes = {q: r.size_bytes for q, r in packages.items()}
    assert sizes["fp16"] > sizes["int8"] > sizes["palette4"]
