"""The supported-operator table in docs/guide/onnx.md and the operator list in the README are
generated from the import table (docs/onnx_tables.py writes them): they match it."""
import importlib.util
import pathlib

import pytest

pytest.importorskip("onnx")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tables():
    spec = importlib.util.spec_from_file_location("onnx_tables", ROOT / "docs" / "onnx_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_docs_list_exactly_the_operators_the_import_table_has():
    tables = _tables()
    for (name, marker), make in tables.REGIONS.items():
        text = (ROOT / name).read_text()
        assert tables.region(text, marker) == make(), (
            f"{name}'s <!-- {marker} --> region is stale: run python docs/onnx_tables.py")


def test_the_table_has_one_row_per_import_row():
    from exprvm.onnx.operators import operator_table, rows
    lines = operator_table().splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == [r.op_type for r in rows()]
    assert {"Conv", "LSTM", "GRU", "LayerNormalization", "Gather", "Shape", "Slice", "Expand", "Where",
            "Gelu", "Erf", "Softmax"} <= {r.op_type for r in rows()}
