"""Models exported by torch.onnx.export (an MLP, a convnet with batch norm, two-layer
bidirectional batch-first LSTM and GRU, a causal attention block), imported by
ev.onnx.load: both machines agree with ONNX Runtime (and PyTorch), and ev.grad through
the imported graph agrees with PyTorch's autograd. Skipped without torch."""
import io
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

import exprvm as ev  # noqa: E402
import onnx_models as M  # noqa: E402


class Attention(nn.Module):
    """Embedding, layer norm, causal two-head attention, GELU feed-forward, residuals."""

    def __init__(self, vocab=13, d=16, heads=2):
        super().__init__()
        self.emb, self.ln = nn.Embedding(vocab, d), nn.LayerNorm(d)
        self.qkv, self.out, self.heads = nn.Linear(d, 3 * d), nn.Linear(d, d), heads
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, ids):
        x = self.emb(ids)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        x = x + self.out((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff(x)


class Recurrent(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = getattr(nn, kind)(3, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _convnet():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                        nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.LogSoftmax(-1)), (5, 8)),
    "convnet": (_convnet, (3, 1, 8, 8)),
    "lstm": (lambda: Recurrent("LSTM"), (2, 6, 3)),
    "gru": (lambda: Recurrent("GRU"), (2, 6, 3)),
    "attention": (Attention, (2, 7)),
}


def _export(name, opset=17, fold=True):
    """(torch model, input, ONNX bytes): exported in eval mode, the batch axis symbolic."""
    torch.manual_seed(0)
    make, shape = MODELS[name]
    model = make().eval()
    x = torch.randint(0, 13, shape) if name == "attention" else torch.randn(shape)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}}, do_constant_folding=fold)
    return model, x, f.getvalue()


@pytest.mark.parametrize("name, opset", [(n, 17) for n in sorted(MODELS)] + [("attention", 20)])
def test_torch_exported_models_match_onnx_runtime_on_both_machines(name, opset):
    model, x, data = _export(name, opset)
    m = onnx.load_from_string(data)
    feeds = {"x": x.numpy()}
    (want,) = M.ort_run(m, feeds)
    with torch.no_grad():
        ref = model(x).numpy()
    for machine in ("tape", "lisp"):
        (got,) = M.ev_run(m, feeds, machine, shapes={"x": tuple(x.shape)})
        assert got.shape == want.shape and got.dtype == want.dtype
        assert M.rel_diff(got, want) <= 1e-5 and M.rel_diff(got, ref) <= 1e-5


def test_the_exported_convnet_keeps_its_batch_norm():
    ops = {n.op_type for n in onnx.load_from_string(_export("convnet", fold=False)[2]).graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm"} <= ops


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_through_torch_exported_models_match_torch_autograd(name):
    model, x, data = _export(name, fold=False)    # unfolded: initializers keep torch's names
    g, (xin,), (y,) = ev.onnx.load(data, shapes={"x": tuple(x.shape)})
    params = {p.name: p for p in g.params()}
    theirs = dict(model.named_parameters())
    assert set(theirs) <= set(params)
    seed = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    cost = ev.sum(y * seed)
    names = sorted(theirs)
    grads = ev.grad(cost, [params[k] for k in names])
    ours = ev.TapeMachine(g, outputs=[cost] + grads).run({xin: x.numpy()})[1:]
    (model(x) * torch.from_numpy(seed)).sum().backward()
    for k, got in zip(names, ours):
        assert M.rel_diff(got, theirs[k].grad.numpy()) <= 2e-5, k
