#!/usr/bin/python3
"""PyTorch-in-Python inference for bench/runtime: the USPS student or teacher with weights from a
shrink checkpoint, in fp32 (eager) or int8 (torch.ao eager-mode PTQ, onednn engine, fused
conv-bn-relu, calibrated on the input). Prints one JSON line: latency p50/p99 at batch 1,
throughput at batch N, peak RSS. --save-torchscript writes the fp32 model as TorchScript."""
import argparse, json, resource, time
import numpy as np, torch, torch.nn as nn
import torch.ao.quantization as tq

LAYERS = {"usps_teacher": [64, 64, "M", 128, 128, "M", 256], "usps_student": [16, "M", 32, "M", 64]}

class Net(nn.Module):
    def __init__(self, name, classes=10):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        layers, c, self.fuse = [], 1, []
        for v in LAYERS[name]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                i = len(layers)
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                self.fuse.append([f"features.{i}", f"features.{i + 1}", f"features.{i + 2}"])
                c = v
        self.features = nn.Sequential(*layers)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)
    def forward(self, x):
        return self.dequant(self.fc(torch.flatten(self.pool(self.features(self.quant(x))), 1)))

def load(net, path):
    saved = torch.jit.load(path).model.state_dict()
    convs = [k.split(".")[0] for k in saved if k.startswith("conv") and k.endswith("weight")]
    mapping = {}
    for n, group in enumerate(net.fuse):
        mapping[f"conv{n + 1}"], mapping[f"bn{n + 1}"] = group[0], group[1]
    mapping["linear1"] = "fc"
    assert len(convs) == len(net.fuse), "checkpoint does not match the model"
    net.load_state_dict({mapping[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in saved.items()})

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-torchscript")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.from_numpy(np.fromfile(a.input, dtype=np.float32)).view(-1, 1, 16, 16)
    net = Net(a.model)
    load(net, a.checkpoint)
    net.eval()
    if a.save_torchscript:
        torch.jit.save(torch.jit.script(net), a.save_torchscript)
    if a.precision == "int8":
        torch.backends.quantized.engine = "onednn"
        tq.fuse_modules(net, net.fuse, inplace=True)
        net.qconfig = tq.get_default_qconfig("onednn")
        tq.prepare(net, inplace=True)
        with torch.no_grad():
            for i in range(0, min(len(x), 2048), 256):
                net(x[i:i + 256])
        tq.convert(net, inplace=True)
    with torch.inference_mode():
        net(x[:1])
        ms, until = [], time.perf_counter() + 2
        for i in range(20000):
            if i >= 30 and time.perf_counter() > until:
                break
            t0 = time.perf_counter()
            net(x[i % len(x):i % len(x) + 1])
            ms.append((time.perf_counter() - t0) * 1000)
        big = x.repeat((a.batch + len(x) - 1) // len(x), 1, 1, 1)[:a.batch].contiguous()
        net(big)
        runs, t0 = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - t0 < 2:
            net(big)
            runs += 1
        seconds = time.perf_counter() - t0
    ms.sort()
    print(json.dumps({"p50_ms": ms[len(ms) // 2], "p99_ms": ms[min(len(ms) - 1, len(ms) * 99 // 100)],
                      "throughput": runs * a.batch / seconds, "batch": a.batch,
                      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))

if __name__ == "__main__":
    main()
