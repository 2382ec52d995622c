#!/usr/bin/python3
"""PyTorch peer for bench/fashion_pipeline: trains a model written in shrink's spec language
(the subset configs/fashion uses: conv, dwconv, bn, relu, relu6, maxpool, gap, linear, add, with
names and from=) on Fashion-MNIST with the recipe of configs/fashion/*.ini, the way a PyTorch user
would: random 2-pixel shifts and horizontal flips, normalization by the training set's mean and
std, SGD with Nesterov momentum and a per-step cosine schedule. Prints one JSON line (test
accuracy, seconds, params). --latency also times batch-1 eval forwards (--epochs 0: only that). --onnx OUT trains
torchvision's mobilenet_v2 (1-channel stem) instead and exports it to ONNX (opset 13, batchnorm kept).
"""
import argparse, gzip, json, math, os, re, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

def load(root):
    get = lambda name: torch.from_numpy(idx(f"{root}/{name}").copy())
    x = get("train-images-idx3-ubyte.gz").float().div(255).unsqueeze(1)
    t = get("t10k-images-idx3-ubyte.gz").float().div(255).unsqueeze(1)
    return x, get("train-labels-idx1-ubyte.gz").long(), t, get("t10k-labels-idx1-ubyte.gz").long()

class SpecNet(nn.Module):
    """A shrink spec string as a torch module (default names and inputs as shrink gives them)."""
    def __init__(self, text, channels, classes):
        super().__init__()
        self.plan, self.mods, shapes, counts, prev = [], nn.ModuleDict(), {"": channels}, {}, ""
        for tok in text.split():
            m = re.fullmatch(r"(?:(\w+)=)?(\w+)(?:\((.*)\))?", tok)
            name, op, args = m.group(1), m.group(2), (m.group(3) or "").split(",") if m.group(3) else []
            counts[op] = counts.get(op, 0) + 1
            name = name or f"{op}{counts[op]}"
            pos = [a for a in args if "=" not in a]
            kw = dict(a.split("=") for a in args if "=" in a)
            src = kw.get("from", prev)
            inputs, c = [src], shapes[src]
            if op in ("conv", "dwconv"):
                out = c if op == "dwconv" else (classes if pos[0] == "classes" else int(pos[0]))
                k = int(pos[1 if op == "conv" else 0]) if len(pos) > (1 if op == "conv" else 0) else int(kw.get("k", 3))
                s, p = int(kw.get("s", 1)), int(kw.get("p", k // 2))
                self.mods[name] = nn.Conv2d(c, out, k, s, p, groups=c if op == "dwconv" else 1, bias=False)
                c = out
            elif op == "bn":
                self.mods[name] = nn.BatchNorm2d(c)
            elif op == "linear":
                out = classes if pos[0] == "classes" else int(pos[0])
                self.mods[name] = nn.Linear(c, out)
                c = out
            elif op == "add":
                inputs = [prev, pos[0]]
            elif op not in ("relu", "relu6", "maxpool", "gap"):
                raise SystemExit(f"peer_fashion.py: op {op} is not in the subset it builds")
            self.plan.append((name, op, inputs, int(pos[0]) if op == "maxpool" and pos else 2))
            shapes[name], prev = c, name

    def forward(self, x):
        outs = {"": x}
        for name, op, inputs, k in self.plan:
            a = outs[inputs[0]]
            if name in self.mods: y = self.mods[name](a)
            elif op == "relu": y = F.relu(a)
            elif op == "relu6": y = F.relu6(a)
            elif op == "maxpool": y = F.max_pool2d(a, k)
            elif op == "gap": y = a.mean((2, 3))
            else: y = a + outs[inputs[1]]
            outs[name] = y
        return y

def augment(x, pad=2):
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n))
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(3)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--spec")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--onnx", help="train torchvision mobilenet_v2 and write it here")
    ap.add_argument("--checkpoint", help="saved after every epoch and resumed from when it exists (an interrupted run goes on)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y, tx, ty = load(a.data)
    mean, std = x.mean().item(), x.std().item()
    norm = lambda v: (v - mean) / std
    if a.onnx:
        import torchvision
        model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
        model.features[0][0] = nn.Conv2d(1, model.features[0][0].out_channels, 3, 1, 1, bias=False)  # 1-channel, small-input stem
    else:
        model = SpecNet(a.spec, 1, 10)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = max(1, a.epochs * math.ceil(len(y) / 128))  # --epochs 0 --latency: timing only
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    done, seconds_before = 0, 0.0
    if a.checkpoint and os.path.exists(a.checkpoint):
        state = torch.load(a.checkpoint)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        done, seconds_before = state["epochs"], state["seconds"]
    t0 = time.perf_counter()
    for epoch in range(done, a.epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            b = perm[i:i + 128]
            loss = F.cross_entropy(model(norm(augment(x[b]))), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if a.checkpoint:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state(),
                     "epochs": epoch + 1, "seconds": seconds_before + time.perf_counter() - t0}
            torch.save(state, a.checkpoint + ".part")
            os.replace(a.checkpoint + ".part", a.checkpoint)
    seconds = seconds_before + time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum((model(norm(tx[i:i + 1000])).argmax(1) == ty[i:i + 1000]).sum().item() for i in range(0, len(ty), 1000))
    result = {"test_accuracy": correct / len(ty), "train_seconds": seconds, "params": sum(p.numel() for p in model.parameters())}
    if a.latency:
        with torch.no_grad():
            one = norm(tx[:1])
            for _ in range(20): model(one)
            times = []
            for i in range(300):
                s = time.perf_counter(); model(norm(tx[i:i + 1])); times.append(time.perf_counter() - s)
        result["batch1_ms_p50"] = 1000 * sorted(times)[len(times) // 2]
    if a.onnx:
        # Exported in training mode so batchnorm stays in the graph and the import can train
        # (an eval-mode export folds it into the convs); momentum 0 keeps the running statistics
        # as they are while the exporter runs the model.
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns: m.momentum = 0.0
        model.train()
        torch.onnx.export(model, norm(tx[:2]), a.onnx, opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
        result.update({"onnx": a.onnx, "mean": mean, "std": std})
    print(json.dumps(result))

if __name__ == "__main__":
    main()
