#!/usr/bin/python3
"""PyTorch peer for bench/data_parallel: PyTorch's own DistributedDataParallel on the gloo backend,
started with the environment torchrun sets (bench/data_parallel), training the same model with the same recipe and global batch as
`shrink launch ... -- train`: SGD (lr 0.05, momentum 0.9, nesterov, weight decay 5e-4, cosine),
global batch 128 split over the ranks, random shift of 1 pixel drawn for the whole batch,
channels_last, one thread per rank. Rank 0 prints one JSON line: the global samples per second of
the training loop (evaluation and start-up excluded)."""
import argparse, json, math, os, sys, time
import torch, torch.distributed as dist, torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_train import batched_shift, channels_last, load_usps, make_model

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    x, y = load_usps(a.data)
    model = torch.nn.parallel.DistributedDataParallel(make_model(a.model).to(memory_format=torch.channels_last))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = math.ceil(len(y) / a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (a.epochs * steps))))
    model.train()
    seen, seconds = 0, 0.0
    for epoch in range(a.epochs):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(y), generator=g)  # the same on every rank
        dist.barrier()
        t0 = time.perf_counter()
        for start in range(0, len(y), a.batch):
            idx = perm[start:start + a.batch]
            n = len(idx)
            mine = idx[n * rank // world:n * (rank + 1) // world]
            xb = channels_last(batched_shift(x[mine], 1))
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, y[mine])
            loss.backward()
            opt.step()
            sched.step()
            loss.item()
            seen += n
        dist.barrier()
        seconds += time.perf_counter() - t0
    if rank == 0:
        print(json.dumps({"samples_per_s": seen / seconds, "seconds": seconds, "samples": seen}))
    dist.destroy_process_group()

if __name__ == "__main__":
    main()
