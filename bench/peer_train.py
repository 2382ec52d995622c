#!/usr/bin/python3
"""PyTorch peer for bench/train_throughput and bench/distill_throughput: the same model, recipe
and thread count as `shrink train` / `shrink distill`, written the way a PyTorch user would.
Prints one JSON line.

--style idiomatic: DataLoader over a Dataset whose __getitem__ pads and randomly crops each
                   example (torchvision's RandomCrop(16, padding=1) semantics), num_workers=0.
--style batched:   the whole batch is shifted with tensor ops, channels_last, as shrink does.
"""
import argparse, json, math, time
import h5py, torch, torch.nn as nn, torch.nn.functional as F

LAYERS = {
    "usps_teacher": [64, 64, "M", 128, 128, "M", 256],
    "usps_student": [16, "M", 32, "M", 64],
}

def make_model(name, classes=10):
    layers, c = [], 1
    for v in LAYERS[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))

class ShiftedUSPS(torch.utils.data.Dataset):
    def __init__(self, x, y, pad):
        self.x, self.y, self.pad = x, y, pad
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        p = self.pad
        img = F.pad(self.x[i], (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
        return img[:, dy:dy + 16, dx:dx + 16], self.y[i]

def load_usps(path, split="train"):
    """The split's images as float [N, 1, 16, 16] and labels as int64."""
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f[split + "/data"][:]).float().view(-1, 1, 16, 16), torch.from_numpy(f[split + "/target"][:]).long()

def channels_last(x):
    """x in channels-last strides, as shrink's loader makes them: .contiguous(memory_format=
    torch.channels_last) leaves a one-channel batch in NCHW strides (the same bytes), and the first
    conv then writes NCHW, so every later layer runs NCHW behind a conversion (15% of a step)."""
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)

def batched_shift(x, pad):
    n, k = x.shape[0], 2 * pad + 1
    padded = F.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, k * k, (n,))
    out = torch.empty_like(x)
    for o in range(k * k):
        idx = (off == o).nonzero().flatten()
        if len(idx):
            out[idx] = padded[idx, :, o // k:o // k + 16, o % k:o % k + 16]
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--style", choices=["idiomatic", "batched"], default="idiomatic")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: CPU autocast around the forward and loss")
    ap.add_argument("--teacher", help="distill from this (randomly initialized) teacher model: T=4, alpha=0.9")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load_usps(a.data)
    model = make_model(a.model)
    if a.style == "batched":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(y) / 128)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (a.epochs * steps_per_epoch))))
    loader = torch.utils.data.DataLoader(ShiftedUSPS(x, y, 1), batch_size=128, shuffle=True, num_workers=0)
    teacher = None
    if a.teacher:
        teacher = make_model(a.teacher).eval()
        if a.style == "batched":
            teacher = teacher.to(memory_format=torch.channels_last)
    model.train()
    seen, seconds = 0, 0.0
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        if a.style == "idiomatic":
            batches = loader
        else:
            perm = torch.randperm(len(y))
            batches = ((channels_last(batched_shift(x[perm[i:i + 128]], 1)), y[perm[i:i + 128]])
                       for i in range(0, len(y), 128))
        for xb, yb in batches:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                out = model(xb)
                if teacher is None:
                    loss = F.cross_entropy(out, yb)
                else:
                    with torch.no_grad():
                        t = teacher(xb)
                    T, alpha = 4.0, 0.9
                    kd = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T
                    loss = alpha * kd + (1 - alpha) * F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss.item()
            (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        seconds += time.perf_counter() - t0
    print(json.dumps({"samples_per_s": seen / seconds, "seconds": seconds, "samples": seen}))

if __name__ == "__main__":
    main()
