#!/usr/bin/python3
"""PyTorch's own quantization-aware training (torch.ao.quantization, eager mode, onednn engine)
of a shrink checkpoint of the USPS student: same weights, data, epochs and optimizer as
`shrink quantize` without a teacher. Prints one JSON line with fp32 and int8 test accuracies."""
import argparse, json, math
import h5py, torch, torch.nn as nn, torch.nn.functional as F
import torch.ao.quantization as tq

class Student(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        widths, layers, c = [16, 32, 64], [], 1
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)
    def forward(self, x):
        x = self.features(self.quant(x))
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))

def load_shrink(model, path):
    saved = torch.jit.load(path).model.state_dict()
    names = {"conv1": "features.0", "bn1": "features.1", "conv2": "features.4", "bn2": "features.5",
             "conv3": "features.8", "bn3": "features.9", "linear1": "fc"}
    model.load_state_dict({names[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in saved.items()})

def accuracy(model, x, y):
    with torch.no_grad():
        return sum((model(x[i:i + 512]).argmax(1) == y[i:i + 512]).sum().item() for i in range(0, len(y), 512)) / len(y)

def shift(x, pad=1):
    n, k = x.shape[0], 2 * pad + 1
    padded, off, out = F.pad(x, (pad,) * 4), torch.randint(0, k * k, (n,)), torch.empty_like(x)
    for o in range(k * k):
        idx = (off == o).nonzero().flatten()
        out[idx] = padded[idx, :, o // k:o // k + 16, o % k:o % k + 16]
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--freeze-bn", type=int, default=3)
    ap.add_argument("--freeze-observers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.backends.quantized.engine = "onednn"
    with h5py.File(a.data, "r") as f:
        xtr = torch.from_numpy(f["train/data"][:]).view(-1, 1, 16, 16)
        ytr = torch.from_numpy(f["train/target"][:]).long()
        xte = torch.from_numpy(f["test/data"][:]).view(-1, 1, 16, 16)
        yte = torch.from_numpy(f["test/target"][:]).long()
    model = Student()
    load_shrink(model, a.checkpoint)
    model.eval()
    fp32 = accuracy(model, xte, yte)
    fuse = [["features.0", "features.1", "features.2"], ["features.4", "features.5", "features.6"], ["features.8", "features.9", "features.10"]]
    model.train()
    tq.fuse_modules_qat(model, fuse, inplace=True)
    model.qconfig = tq.get_default_qat_qconfig("onednn")
    tq.prepare_qat(model, inplace=True)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = a.epochs * math.ceil(len(ytr) / 128)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(a.epochs):
        if epoch >= a.freeze_bn:
            model.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
        if epoch >= a.freeze_observers:
            model.apply(tq.disable_observer)
        model.train()
        perm = torch.randperm(len(ytr))
        for i in range(0, len(ytr), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            F.cross_entropy(model(shift(xtr[idx])), ytr[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    fake = accuracy(model, xte, yte)
    int8 = tq.convert(model, inplace=False)
    print(json.dumps({"fp32": fp32, "qat_fake_quant": fake, "int8": accuracy(int8, xte, yte)}))

if __name__ == "__main__":
    main()
