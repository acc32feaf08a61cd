"""Facts several modules agree on, in a leaf (no torch), so that config validates params.yaml without torch."""

NUM_PARAMETERS = 2_471_842  # AlexNet-256-8-8-2
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
# The lottery-ticket criteria (classprune.lottery.pruning registers them; SNIP and L-OBS are baselines, not these).
LT_CRITERIA = ("magnitude_increase", "magnitude")
# Channel-ticket criteria (classprune.lottery.channels registers them).
CHANNEL_CRITERIA = ("l1", "l2_group", "refill")
