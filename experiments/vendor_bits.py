"""Which environment knobs change torch's float bits on this CPU (issue 41: bits that hold across vendors).

``train.cpu_isa: avx2`` caps ATen's and oneDNN's kernels at AVX2, which gives equal bits on Intel machines with
and without AVX-512, but an AMD machine still computes other pretrain features than an Intel one. Candidates
left: MKL's per-vendor code paths (``MKL_CBWR``, ``MKL_ENABLE_INSTRUCTIONS``) and oneDNN's blocking (it reads
the cache sizes; no knob). Each candidate runs the same few SGD steps of AlexNet's features and head in a fresh
interpreter (the variables are read when torch starts); equal hashes mean the knob changes nothing here, so it
cannot make this CPU agree with another vendor's. A knob that changes the hash is a candidate for a full
pretrain compared with the committed Intel features (dvc.lock).

    python experiments/vendor_bits.py     # writes reports/evidence/vendor_bits.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "evidence" / "vendor_bits.json"
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
CANDIDATES = {
    "native": {},
    "avx2 (train.cpu_isa)": AVX2,
    "avx2 + MKL_CBWR=AVX2": {**AVX2, "MKL_CBWR": "AVX2"},
    "avx2 + MKL_CBWR=COMPATIBLE": {**AVX2, "MKL_CBWR": "COMPATIBLE"},
    "avx2 + MKL_ENABLE_INSTRUCTIONS=AVX2": {**AVX2, "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx2 + MKL_CBWR=AVX2,STRICT": {**AVX2, "MKL_CBWR": "AVX2,STRICT"},
}
PROBE = r"""
import hashlib, torch, torchvision
torch.manual_seed(0); torch.set_num_threads(1)
net = torchvision.models.alexnet(num_classes=2)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 2, (16,))
for _ in range(3):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
h = hashlib.md5(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()
print(h, torch.backends.cpu.get_cpu_capability())
"""


def main() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "ONEDNN_", "ATEN_"))}
    results = {}
    for name, env in CANDIDATES.items():
        out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True)
        digest, capability = out.stdout.split()
        results[name] = {"env": env, "md5": digest, "kernels": capability}
        print(f"{name:40s} {digest} {capability}")
    cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("model name"))
    avx2 = results["avx2 (train.cpu_isa)"]["md5"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"cpu": cpu, "results": results,
                               "differs_from_avx2": {n: r["md5"] != avx2 for n, r in results.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
