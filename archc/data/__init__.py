"""Data sets: the embedded digits, CIFAR-10 batches, image folders, synthetic data, COCO and shapes."""
