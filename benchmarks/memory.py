"""How close the static memory estimates come to onnxruntime's measured peak on CPU.

For each model: the plain static estimate (weights + liveness peak of activations, every output a
new buffer), the runtime-aware one (``RuntimeEstimate``: session, weights and the copies session
creation makes, the first run's arena plus the memory-pattern block), and what ``auditor.measure``
measures in a child process (peak RSS over the baseline, and its phases: RSS after session
creation, peak during creation, peak during the first run). The ratio runtime-aware / measured
should lie within 0.75-1.25 for every model measured above 50 MB.

Models: the bundled samples (tiny, at sequence 16), and generated ones in a temporary folder:
  bert         transformers BertModel (random weights, hidden 384, 6 layers) at batch 8 x 256,
               TorchScript export
  bert_dynamo  the same through the torch.export-based exporter
  cnn          a ResNet-18-like network at 4 x 224 x 224: NCHWc copies of the Conv weights
  mlp          6 x Linear(2048, 2048) at batch 1: weights and their prepacked copies
  attention    one self-attention block over 2048 tokens: 128 MiB score matrices
  gpt2_lm      a GPT-2 LM (hidden 256, 4 layers) at 2 x 256: the logits output dominates

``--quick`` skips the two torch.export-based models and shrinks bert and attention.

Usage: python benchmarks/memory.py [--quick] [--keep DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.audit import audit_with_graph, run_inputs  # noqa: E402
from auditor.graph import ShapeRequest  # noqa: E402
from auditor.measure import Measurement, measure  # noqa: E402

MB = 10**6
MIB = 1 << 20
TARGET = 0.25  # |runtime-aware / measured - 1| at most this
TARGET_ABOVE = 50 * MB  # for models whose measured peak is above this


def _progress(message: str) -> None:
    print(f"[memory] {message}", file=sys.stderr, flush=True)


# ---- generated models ------------------------------------------------------------------------


def _export(
    module: object, inputs: Mapping[str, object], path: Path, dynamic: dict[str, dict[int, str]], dynamo: bool = False
) -> None:
    """``module(**inputs)`` to ONNX, opset 18, the given axes dynamic: the TorchScript exporter,
    or with ``dynamo`` the torch.export-based one (its prints go to stderr)."""
    import torch

    assert isinstance(module, torch.nn.Module)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = {name: {axis: torch.export.Dim.DYNAMIC for axis in axes} for name, axes in dynamic.items()}
            torch.onnx.export(
                module, (), str(path), kwargs=dict(inputs), dynamo=True, opset_version=18, external_data=False,
                dynamic_shapes=shapes, optimize=True, verbose=False,
            )  # fmt: skip
        else:
            torch.onnx.export(
                module, (), str(path), kwargs=dict(inputs), dynamo=False, opset_version=18, input_names=list(inputs),
                output_names=["out"], dynamic_axes=dynamic, do_constant_folding=True,
            )  # fmt: skip


def _bert(path: Path, quick: bool, dynamo: bool) -> ShapeRequest:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    hidden, layers = (256, 4) if quick else (384, 6)
    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden, max_position_embeddings=512, attn_implementation="eager",
    )  # type: ignore[call-arg]  # fmt: skip
    bert = BertModel(config, add_pooling_layer=False)

    class Encoder(torch.nn.Module):  # named inputs, the last hidden state out
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden

    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    _export(Encoder(), inputs, path, {"input_ids": axes, "attention_mask": axes}, dynamo)
    return ShapeRequest(batch=8, sequence=256)


def make_bert(path: Path, quick: bool) -> ShapeRequest:
    """A BERT encoder with random weights (hidden 384, 6 layers; quick: hidden 256, 4 layers), TorchScript export."""
    return _bert(path, quick, dynamo=False)


def make_bert_dynamo(path: Path, quick: bool) -> ShapeRequest:
    """The same BERT encoder through the torch.export-based exporter."""
    return _bert(path, quick, dynamo=True)


def make_gpt2_lm(path: Path, quick: bool) -> ShapeRequest:
    """A GPT-2 LM (hidden 256, 4 layers, the 50257-token head tied to the embedding) at batch 2 x 256:
    the 98 MiB logits output is the largest activation (torch.export-based exporter)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=256, n_layer=4, n_head=4, vocab_size=50257, n_positions=512, use_cache=False,
        attn_implementation="eager",
    )  # type: ignore[call-arg]  # fmt: skip
    gpt = GPT2LMHeadModel(config)

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.gpt(input_ids=input_ids).logits
            return logits

    _export(LM(), {"input_ids": torch.ones(2, 16, dtype=torch.long)}, path, {"input_ids": {0: "batch", 1: "sequence"}}, True)
    return ShapeRequest(batch=2, sequence=256)


def make_cnn(path: Path, quick: bool) -> ShapeRequest:
    """A ResNet-18-like network (basic blocks 64-128-256-512, batch norm folded by the export)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.b(self.a(x)) + self.skip(x))

    torch.manual_seed(0)
    stages: list[nn.Module] = []
    cin = 64
    for cout in (64, 128, 256, 512):
        stages += [Block(cin, cout, 1 if cout == 64 else 2), Block(cout, cout, 1)]
        cin = cout
    net = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000),
    )  # fmt: skip
    _export(net, {"input": torch.randn(1, 3, 224, 224)}, path, {"input": {0: "batch"}})
    return ShapeRequest(batch=1 if quick else 4)


def make_mlp(path: Path, quick: bool) -> ShapeRequest:
    """Six Linear(2048, 2048) with ReLU between, at batch 1: 96 MiB of weights, tiny activations."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(2048, 2048)] + ([nn.ReLU()] if i < 5 else [])
    _export(nn.Sequential(*layers), {"input": torch.randn(1, 2048)}, path, {"input": {0: "batch"}})
    return ShapeRequest(batch=1)


def make_attention(path: Path, quick: bool) -> ShapeRequest:
    """One self-attention block (8 heads of 32) over 2048 tokens: two 128 MiB score matrices live at once."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, width: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(width, 3 * width)
            self.out = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, w = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
            scores = torch.softmax(q @ k.transpose(-1, -2) * (w // self.heads) ** -0.5, dim=-1)
            out: torch.Tensor = x + self.out((scores @ v).transpose(1, 2).reshape(b, n, w))
            return out

    torch.manual_seed(0)
    _export(Attention(256, 8), {"x": torch.randn(1, 64, 256)}, path, {"x": {0: "batch", 1: "sequence"}})
    return ShapeRequest(batch=1, sequence=1024 if quick else 2048)


GENERATED: dict[str, Callable[[Path, bool], ShapeRequest]] = {
    "bert": make_bert,
    "bert_dynamo": make_bert_dynamo,
    "cnn": make_cnn,
    "mlp": make_mlp,
    "attention": make_attention,
    "gpt2_lm": make_gpt2_lm,
}
SAMPLE_SHAPES = ShapeRequest(sequence=16)  # the samples' position tables hold 16 rows
SLOW = ("bert_dynamo", "gpt2_lm")  # torch.export-based exports take 10-20 s each: not with --quick


# ---- the comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    plain: int
    runtime: int
    dominant: str
    measured: Measurement

    @property
    def ratio(self) -> float:
        return self.runtime / max(1, self.measured.peak_bytes)

    @property
    def counted(self) -> bool:
        """Whether the target applies: measured peak above 50 MB."""
        return self.measured.peak_bytes > TARGET_ABOVE

    @property
    def meets(self) -> bool:
        return abs(self.ratio - 1) <= TARGET


def compare(name: str, path: Path, shapes: ShapeRequest, runs: int, warmup: int) -> Row:
    """Audit one model at ``shapes``, then measure it in onnxruntime at the same shapes."""
    report, graph = audit_with_graph(path, shapes=shapes)
    memory = report.memory
    assert memory is not None
    measured = measure(path, run_inputs(graph), runs=runs, warmup=warmup)
    return Row(name, memory.plain_peak_bytes, memory.runtime.peak_bytes, memory.runtime.dominant, measured)


def _mib(n: int) -> str:
    return f"{n / MIB:8.1f}"


def table(rows: list[Row]) -> list[str]:
    """The comparison as text lines (MiB)."""
    head = (
        f"{'model':<17} {'plain':>8} {'runtime':>8} {'measured':>8} {'session':>8} {'creation':>8} "
        f"{'1st run':>8} {'rt/meas':>7} {'target':>6}  dominant (runtime-aware)"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.measured
        flag = "-" if not r.counted else ("ok" if r.meets else "MISS")
        lines.append(
            f"{r.name:<17} {_mib(r.plain)} {_mib(r.runtime)} {_mib(m.peak_bytes)} {_mib(m.session_bytes)} "
            f"{_mib(m.creation_peak_bytes)} {_mib(m.first_run_peak_bytes)} {r.ratio:7.2f} {flag:>6}  {r.dominant}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two samples and smaller generated models")
    parser.add_argument("--keep", type=Path, help="write the generated models here and keep them")
    parser.add_argument("--only", nargs="*", help="run only these models (names as in the table)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs, warmup = (3, 2) if args.quick else (5, 2)

    samples = sorted((ROOT / "samples").glob("*.onnx"))
    if args.quick:
        samples = [p for p in samples if p.stem in ("bert_like", "small_cnn")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="auditor-memory-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        plan: list[tuple[str, Path, Callable[[Path, bool], ShapeRequest] | None]] = [(p.stem, p, None) for p in samples]
        plan += [(n, folder / f"{n}.onnx", make) for n, make in GENERATED.items() if not (args.quick and n in SLOW)]
        for name, path, make in plan:
            if args.only and name not in args.only:
                continue
            step = time.perf_counter()
            if make is None:
                shapes = SAMPLE_SHAPES
            else:
                _progress(f"exporting {name}")
                shapes = make(path, args.quick)
            _progress(f"auditing and measuring {name}")
            rows.append(compare(name, path, shapes, runs, warmup))
            _progress(f"{name}: {time.perf_counter() - step:.1f} s")

    print(f"onnxruntime CPU, {platform.machine()}, runs={runs} warmup={warmup}; sizes in MiB")
    print("\n".join(table(rows)))
    counted = [r for r in rows if r.counted]
    met = [r.name for r in counted if r.meets]
    missed = [r.name for r in counted if not r.meets]
    print(
        f"target (runtime-aware within {TARGET:.0%} of measured, peak > {TARGET_ABOVE // MB} MB): "
        f"{len(met)}/{len(counted)} met ({', '.join(met) or 'none'})"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + f"; {time.perf_counter() - started:.0f} s"
    )
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
