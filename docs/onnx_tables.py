"""Rewrite the generated parts of docs/guide/onnx.md from ev.onnx's tables:

    python docs/onnx_tables.py          (tests/test_onnx_docs.py checks they are current)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exprvm.onnx import operators  # noqa: E402

REGIONS = {  # (file, marker) -> the generated text
    ("docs/guide/onnx.md", "onnx-operators"): operators.operator_table,
    ("docs/guide/onnx.md", "onnx-exports"): lambda: operators.export_names() + "\n",
}


def region(text, marker):
    m = re.search(rf"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", text, re.S)
    return None if m is None else m.group(1)


def main():
    for (name, marker), make in REGIONS.items():
        path = ROOT / name
        text = path.read_text()
        if region(text, marker) is None:
            raise SystemExit(f"{name} has no <!-- {marker} --> region")
        text = re.sub(rf"(<!-- {marker} -->\n).*?(<!-- /{marker} -->)", lambda m: m.group(1) + make() + m.group(2),
                      text, flags=re.S)
        path.write_text(text)


if __name__ == "__main__":
    main()
