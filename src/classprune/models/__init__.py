"""The networks (torchvision's, with the paper's small head) and W0's pretraining on the source task."""
