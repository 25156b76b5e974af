"""Object detection pieces for the paper's Faster R-CNN C4 (appendix A/B), in pure PyTorch."""
