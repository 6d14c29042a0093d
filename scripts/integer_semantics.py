"""What integer semantics cost: PTQ top-1 with float or 8-bit residual sums and float or int32
biases, each beside the integer-only model's top-1 and its agreement with the fake-quant model.

    python scripts/integer_semantics.py [--checkpoint C] [--data imagefolder:DIR]

Rows: W8A8 and W4A8 (first and last layer at 8 bits), the default method (``auto``). Columns:
(residual_bits, quantize_bias) = (0, false) the float sums and biases codesign used before
both were quantized, (8, false), and (8, true) the default. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from codesign.config import QuantSpec
from codesign.data import load_dataset, logits_of
from codesign.errors import QuantError
from codesign.pipeline import load_model, run_ptq
from codesign.quant import integer_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
ROWS = {
    "W8A8": {"weight_bits": 8, "act_bits": 8},
    "W4A8": {"weight_bits": 4, "act_bits": 8, "keep_8bit": ("first", "last")},
}
SEMANTICS = [(0, False), (8, False), (8, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=str(SHARED / "checkpoints/resnet20-cifar10-idelbayev.th")
    )
    parser.add_argument("--data", default=f"imagefolder:{SHARED / 'data/cifar10-subset'}")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    model, _, _ = load_model(args.checkpoint)
    labels = dataset.test.labels
    header = [f"residual_bits {r}, quantize_bias {str(b).lower()}" for r, b in SEMANTICS]
    print("| configuration | " + " | ".join(header) + " |")
    print("| --- |" + " --- |" * len(SEMANTICS))
    for row, widths in ROWS.items():
        cells = []
        for residual_bits, quantize_bias in SEMANTICS:
            spec = QuantSpec(**widths, residual_bits=residual_bits, quantize_bias=quantize_bias)
            quantized, _ = run_ptq(model, dataset, spec)
            fake = logits_of(quantized, dataset.test).argmax(1)
            cell = f"{100.0 * float((fake == labels).float().mean()):.2f}"
            try:
                exact = logits_of(integer_model(quantized), dataset.test).argmax(1)
            except QuantError:  # float residual sums: no integer-only model
                cell += " (integer: -)"
            else:
                agreement = 100.0 * float((exact == fake).float().mean())
                top1 = 100.0 * float((exact == labels).float().mean())
                cell += f" (integer: {top1:.2f}, agreement {agreement:.2f} %)"
            cells.append(cell)
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
