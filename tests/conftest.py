import os

# Keep the test workers from oversubscribing this machine's few cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
