"""ricea-pyg: multi-modal entity alignment (RICEA) for PyTorch Geometric."""
__version__ = '0.2.0'
