#!/usr/bin/python3
"""Writes OUT/teacher.pt (torch.jit.save of a small CNN), OUT/input.bin and OUT/logits.bin
(raw float32) for test_distill: the C++ side must reproduce the logits."""
import sys, torch, torch.nn as nn
out = sys.argv[1]
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
model[1].running_mean.uniform_(-0.5, 0.5); model[1].running_var.uniform_(0.5, 2.0)
model.eval()
x = torch.randn(4, 1, 16, 16)
with torch.no_grad():
    y = model(x)
torch.jit.save(torch.jit.script(model), f"{out}/teacher.pt")
x.numpy().tofile(f"{out}/input.bin")
y.numpy().tofile(f"{out}/logits.bin")
