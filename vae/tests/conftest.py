import torch

# The models under test are tiny: one thread is fastest, and on a busy machine several
# threads fighting for the cores make small matrix products many times slower.
torch.set_num_threads(1)
