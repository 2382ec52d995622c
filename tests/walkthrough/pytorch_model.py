"""The PyTorch side of docs/import.md's walkthrough, as a user writes it: a small CNN trained on an
image folder read by torchvision (grayscale, resized to 16x16 with Pillow's bilinear filter, as
shrink's image folders do), exported to ONNX.

usage: /usr/bin/python3 pytorch_model.py PHOTOS OUT.onnx   (prints the training mean and std; writes
the class names, one a line, to OUT.onnx.classes)
"""
import sys

import torch
import torch.nn as nn
from torchvision import datasets, transforms

photos, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
to_tensor = transforms.Compose([transforms.Grayscale(), transforms.Resize((16, 16), transforms.InterpolationMode.BILINEAR), transforms.ToTensor()])
train = datasets.ImageFolder(f"{photos}/train", to_tensor)
x = torch.stack([image for image, _ in train])
y = torch.tensor([label for _, label in train])
mean, std = x.mean().item(), x.std().item()

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(train.classes)))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(30):
    loss = nn.functional.cross_entropy(model((x - mean) / std), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

model.eval()
torch.onnx.export(model, (x[:1] - mean) / std, out, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
open(out + ".classes", "w").write("\n".join(train.classes) + "\n")
print(mean, std)
