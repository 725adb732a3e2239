"""The budgets the DARec benchmarks run under (``--budget``), as config overrides: one place,
read by darec_accuracy.py and dynamic_adaption.py.

* ``gpu``: the method as specified: all 30 SmolLM2 layers, 16 title tokens a span, the
  last 50 items, every training window, up to 20 epochs (patience 3), bf16 on CUDA.
* ``cpu-full``: the method's own depth on a 2-core CPU with native bf16 (``precision=auto``
  is bf16 there): all 30 SmolLM2 layers, 12 title tokens a span, the last 50 items, each
  user's most recent window in batches of 8, up to 8 epochs (patience 2), validated during
  training on 300 users (the final validation and test use all). On this project's 2-core
  Xeon a clean epoch of ml-100k takes 13 minutes on both cores (783 to 788 s in the kept
  ``cpu-full-pretrained-cf`` run's metrics.jsonl), about twice that for each of two one-core
  runs side by side, longer with other work sharing the machine. The
  first budget stopped at 2 epochs, with validation still rising steeply (0.024, then
  0.047); runs begun under it are extended by the larger budget when resumed.
* ``cpu``: what fits a 2-core CPU in about an hour a data set: the first 2 SmolLM2 layers,
  4 title tokens a span, the last 20 items, and only each user's most recent window
  (``windows_per_user=1``) in batches of 8 (more updates from few windows), up to 5
  epochs (patience 2).
"""

BUDGETS = {
    "gpu": ["backbone=smollm2", "keep_layers=0", "item_tokens=16", "max_len=50", "window_overlap=0.5",
            "windows_per_user=0", "epochs=20", "patience=3", "batch_size=32", "lr=1e-3"],
    "cpu-full": ["backbone=smollm2", "keep_layers=0", "item_tokens=12", "max_len=50", "window_overlap=0",
                 "windows_per_user=1", "epochs=8", "patience=2", "batch_size=8", "lr=1e-3", "valid_users=300"],
    "cpu": ["backbone=smollm2", "keep_layers=2", "item_tokens=4", "max_len=20", "window_overlap=0",
            "windows_per_user=1", "epochs=5", "patience=2", "batch_size=8", "lr=1e-3"],
}
