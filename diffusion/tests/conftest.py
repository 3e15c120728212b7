"""One torch thread for the tests: their tensors are tiny, and on a busy machine a second
OpenMP thread that waits for the first makes every call many times slower."""

import torch

torch.set_num_threads(1)
