"""fp32 against bf16 for the LLM's matmul shapes at decoding batch sizes on this CPU (why `--dtype auto`
picks bf16 on AMX CPUs): rows = clips x beams (5 = one clip, 80 = 16 clips, 400 = a prefill).

    python bench/matmul_dtype.py >> bench/results/matmul_dtype_cpu.txt
"""

import datetime
import time

import torch


def main() -> None:
    print(f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, (rows x 576) @ (576 x 1536)")
    torch.manual_seed(0)
    for rows in (5, 80, 400):
        us = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, w = torch.randn(rows, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
            for _ in range(5):
                torch.nn.functional.linear(a, w)
            n, t0 = 200, time.perf_counter()
            for _ in range(n):
                torch.nn.functional.linear(a, w)
            us[dtype] = (time.perf_counter() - t0) / n * 1e6
        print(f"  {rows:>4} rows: fp32 {us[torch.float32]:8.1f} us, bf16 {us[torch.bfloat16]:8.1f} us, "
              f"bf16 speed-up {us[torch.float32] / us[torch.bfloat16]:.2f}x")


if __name__ == "__main__":
    main()
