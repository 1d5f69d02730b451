"""The ``ricea`` command: train, evaluate, align and explain.

    ricea train --root DATA/dbp15k --pair zh_en --out runs/zh [--config F]
    ricea evaluate runs/zh/best.pt --split test
    ricea align runs/zh/best.pt --output runs/zh/pairs.tsv
    ricea explain runs/zh/best.pt --out runs/zh/explain

Bad input (a wrong path, an unknown config key, a missing modality file)
prints one clear line and exits with code 2. A checkpoint owns its data:
evaluate, align, explain and ``train --resume`` read it from ``run.json``
beside the checkpoint and refuse a data flag that differs (evaluate, align
and explain accept it with ``--other-data``). ``run.json`` records the
dataset's own fields and the SHA-256 of every file it read, so a moved data
folder (``--root``, ``--image-features``, ``--image-ids`` elsewhere, same
bytes) is still the checkpoint's data, and data edited since training is
refused. A data flag the chosen dataset does not read is refused. ``train``
refuses an ``--out`` folder that holds a run unless ``--resume`` or
``--overwrite`` is given, and an advisory lock (``OUT/.lock``) keeps a
second training out of it.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from ricea_pyg.data.errors import DataFormatError
from ricea_pyg.data.schema import ALIGN
from ricea_pyg.datasets.base import digest_memo, file_digest
from ricea_pyg.datasets.registry import (
    dataset_fields,
    dataset_names,
    open_dataset,
    unread_field_error,
)
from ricea_pyg.io import atomic_write
from ricea_pyg.metrics import CANDIDATE_PROTOCOLS
from ricea_pyg.search.index import SCALE_NPROBE
from ricea_pyg.train.checkpoint import load_checkpoint
from ricea_pyg.train.config import (
    RECIPES,
    ConfigError,
    TrainConfig,
    resume_conflicts,
)

#: Settings that None leaves to the graph's size (TrainConfig.resolve).
SIZED = ('channels', 'batch_size', 'sampled', 'eval_queries', 'propagate',
         'label_channels')

RUN_FILE = 'run.json'


class CLIError(Exception):
    """Exit code 2 with this message."""


# -- data ----------------------------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group('data')
    g.add_argument('--dataset', choices=dataset_names(), default=None,
                   help='default dbp15k' if required else 'default: the '
                   "checkpoint's")
    g.add_argument('--root', help='dataset folder (DBP15K: the one holding '
                   '<pair>/ and translated_ent_name/)')
    g.add_argument('--pair', default=None, help='DBP15K pair (zh_en)')
    g.add_argument('--no-names', action='store_true', default=None,
                   help='leave out name and char modalities')
    g.add_argument('--split-seed', type=int, default=None)
    g.add_argument('--entities', type=int, default=None,
                   help='synthetic: entities per KG (default 2000)')
    g.add_argument('--download', action='store_true', default=None,
                   help='download missing DBP15K files')
    g.add_argument('--fold', type=int, default=None, metavar='K',
                   help='OpenEA: use 721_5fold/K (default 1 when present, '
                   'else a seeded random split)')
    g.add_argument('--image-features', default=None, metavar='PATH',
                   help='image vectors for both KGs (adds the img modality): '
                   '.npy with --image-ids, .npz with arrays x and ids, or '
                   'text "entity<TAB>v1 v2 ..."; DBP15K keys are entity ids, '
                   'others URIs')
    g.add_argument('--image-ids', default=None, metavar='PATH',
                   help='the entity of each row of a .npy --image-features, '
                   'one per line')


#: Defaults of the data-spec fields the command line sets (a dataset's
#: spec holds only the fields it reads, :func:`dataset_fields`).
_DEFAULTS: Dict[str, Any] = dict(
    root=None, pair='zh_en', no_names=False, split_seed=0, entities=2000,
    download=False, fold=None, image_features=None, image_ids=None)

#: Fields holding a path; a run identifies their files by content
#: (``files`` in run.json), so a moved folder is still the same data.
_PATH_KEYS = ('root', 'image_features', 'image_ids')

#: Fields that do not name the data (never compared with a checkpoint's).
_NOT_DATA = ('download',)


def _data_spec(args, saved: Optional[Dict[str, Any]] = None
               ) -> Dict[str, Any]:
    """``dataset`` plus the fields that dataset reads: the flags given, else
    the saved spec, else the defaults. A data flag the dataset does not read
    is refused (one line naming the flag and the dataset)."""
    saved = saved or {}
    name = getattr(args, 'dataset', None) or saved.get('dataset') or \
        'dbp15k'
    fields = dataset_fields(name)
    for key in _DEFAULTS:
        if key not in fields and getattr(args, key, None) is not None:
            raise CLIError(unread_field_error(name, key))
    spec: Dict[str, Any] = {'dataset': name}
    for key in fields:
        value = getattr(args, key, None)
        if value is None:
            value = saved.get(key, _DEFAULTS.get(key))
        if key in _PATH_KEYS and isinstance(value, str):
            # run.json is read from other folders (and cwds)
            value = os.path.abspath(os.path.expanduser(value))
        spec[key] = value
    return spec


def _data_keys(name: str) -> tuple:
    """The keys of dataset :obj:`name`'s spec that name the data."""
    return ('dataset',) + tuple(k for k in dataset_fields(name)
                                if k not in _NOT_DATA)


def _read_run(run_file: str) -> Optional[Dict[str, Any]]:
    """The saved data spec of ``run.json`` (with its ``files`` digests when
    the run recorded them), or None without one. Older run files holding
    every key of every dataset read the same (extra keys are ignored)."""
    if not os.path.isfile(run_file):
        return None
    try:
        with open(run_file) as f:
            saved = dict(json.load(f)['data'])
    except (ValueError, KeyError, TypeError) as e:
        raise CLIError(f'{run_file}: not a ricea run file ({e})') from None
    files = saved.get('files')
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(v, str) for v in files.values())):
        raise CLIError(f'{run_file}: not a ricea run file (data.files is '
                       'not a mapping of file names to SHA-256 digests)')
    return saved


def _spec_conflicts(args, saved: Dict[str, Any]) -> List[tuple]:
    """``(key, flag value, saved value)`` of each data flag given on the
    command line that differs from the saved spec (only the keys of the
    chosen dataset are compared)."""
    given = _data_spec(args, saved)

    def same(key):
        a, b = given[key], saved.get(key)
        if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str):
            return os.path.abspath(a) == os.path.abspath(b)
        return a == b
    return [(k, given[k], saved.get(k)) for k in _data_keys(given['dataset'])
            if getattr(args, k, None) is not None and not same(k)]


def _flag(key: str) -> str:
    return '--' + key.replace('_', '-')


def _refuse_conflicts(args, saved: Dict[str, Any], run_file: str,
                      hint: str) -> List[tuple]:
    """Refuses a data flag that differs from the saved spec. A path flag
    (``--root``, ``--image-features``, ``--image-ids``) that names another
    place is let through when the run recorded its files' digests: it is
    returned, ``(key, path, saved path)``, for :func:`_check_files` to
    compare the contents once the data is loaded."""
    moved = []
    recorded = isinstance(saved.get('files'), dict)
    for key, value, was in _spec_conflicts(args, saved):
        if recorded and key in _PATH_KEYS and value is not None and \
                was is not None:
            moved.append((key, value, was))
            continue
        shown = '' if isinstance(value, bool) else f' {value}'
        raise CLIError(f"{_flag(key)}{shown} conflicts with the "
                       f"checkpoint's {key} {was} ({run_file}); {hint}")
    return moved


def _check_files(spec: Dict[str, Any], saved: Dict[str, Any],
                 moved: List[tuple], run_file: str, moved_hint: str,
                 changed_hint: str,
                 digests: Optional[Dict[str, str]] = None) -> None:
    """Compares the files of :obj:`spec` with the SHA-256 digests the run
    recorded (``files``; skipped for a run.json without them). Before the
    data is loaded (:obj:`digests` None) each recorded file is hashed where
    the spec now puts it; after, the dataset's own digests are compared,
    which also catch a file the training did not read. A moved path flag
    whose files differ, or a saved file whose content changed, is refused
    with one line naming the first differing file. Inside
    :func:`digest_memo` each file is read once for both."""
    recorded = saved.get('files')
    if not isinstance(recorded, dict):
        return
    moved_to = {key: (value, was) for key, value, was in moved}

    def where(name):
        if name.startswith('option:'):
            return name[len('option:'):], spec.get(name[len('option:'):])
        root = spec.get('root')
        return 'root', (os.path.join(root, name) if root else None)

    if digests is None:
        names = list(recorded)
        now = {}
        for name in names:
            path = where(name)[1]
            if path is not None:
                now[name] = file_digest(path)
    else:
        names = list(recorded) + sorted(n for n in digests
                                        if n not in recorded)
        now = digests
    for name in names:
        if recorded.get(name) == now.get(name):
            continue
        key, path = where(name)
        how = ('missing' if now.get(name) is None else
               'not read in training' if name not in recorded else
               'other content')
        if key in moved_to:
            value, was = moved_to[key]
            shown = name if key == 'root' else os.path.basename(value)
            raise CLIError(f"{_flag(key)} {value} does not hold the "
                           f"checkpoint's data ({was}): {shown} differs "
                           f'({how}; SHA-256 recorded in {run_file}); '
                           f'{moved_hint}')
        raise CLIError(f'{path or name}: changed since the checkpoint was '
                       f'trained ({how}; SHA-256 recorded in {run_file}); '
                       f'{changed_hint}')


# -- config flags ------------------------------------------------------------
#: Score weights that take one value or several to choose from on
#: validation: (metavar, what the value is).
_SCORE_WEIGHTS = {
    'label_weight': ('G', 'share of the score of the seed labels beside '
                          'the fusion'),
    'name_weight': ('S', 'weight of the name modalities in the score '
                         '(default: 1 0.5 0.25 0.1)'),
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('training (override --config)')
    for f in dataclasses.fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        default = TrainConfig.__dataclass_fields__[f.name]
        kind = type(default.default) if default.default is not \
            dataclasses.MISSING else None
        if f.name in ('modalities', 'fusion_kwargs', 'iter_threshold'):
            g.add_argument(flag, dest=f.name, default=None,
                           help='JSON value' if f.name != 'modalities'
                           else 'comma-separated, e.g. graph,rel,name')
        elif f.name == 'fanouts':
            g.add_argument(flag, dest=f.name, default=None,
                           help='neighbours per hop for sampled training, '
                           'comma-separated, e.g. 10,5')
        elif f.name == 'propagate':
            g.add_argument(flag, dest=f.name, default=None,
                           help="comma-separated modalities whose features "
                           "are propagated over the triples, e.g. name,char;"
                           " '' for none")
        elif f.name in _SCORE_WEIGHTS:
            metavar, what = _SCORE_WEIGHTS[f.name]
            g.add_argument(flag, dest=f.name, type=float, nargs='+',
                           default=None, metavar=metavar,
                           help=f'{what}; several values: chosen on '
                           'validation')
        elif f.name in ('channels', 'batch_size', 'eval_queries',
                        'label_channels'):  # by size
            g.add_argument(flag, dest=f.name, type=int, default=None)
        elif kind is bool or f.name == 'sampled':
            g.add_argument(flag, dest=f.name, default=None,
                           action=argparse.BooleanOptionalAction)
        else:
            g.add_argument(flag, dest=f.name, type=kind, default=None)


def _config(args) -> TrainConfig:
    overrides: Dict[str, Any] = {}
    for name in TrainConfig.keys():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ('modalities', 'propagate'):
            value = [m.strip() for m in value.split(',') if m.strip()]
        elif name == 'fanouts':
            try:
                value = [int(v) for v in value.split(',') if v.strip()]
            except ValueError:
                raise ConfigError(f'--fanouts: comma-separated integers, '
                                  f'e.g. 10,5 (got {value!r})') from None
        elif name in _SCORE_WEIGHTS and len(value) == 1:
            value = value[0]
        elif name in ('fusion_kwargs', 'iter_threshold'):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f'--{name.replace("_", "-")}: not valid '
                                  f'JSON ({value!r})') from None
        overrides[name] = value
    recipe = getattr(args, 'recipe', None)
    if args.config and recipe:
        raise ConfigError('--config and --recipe both set the defaults; '
                          'pass one (the flags override either)')
    if args.config:
        return TrainConfig.from_file(args.config, **overrides)
    if recipe:
        return TrainConfig.recipe(recipe, **overrides)
    return TrainConfig.from_dict(overrides, source='command line')


# -- commands ----------------------------------------------------------------------
RUN_MARKERS = (RUN_FILE, 'last.pt', 'best.pt')


def _lock(out: str):
    """An open, exclusively locked ``OUT/.lock`` (advisory, non-blocking);
    None where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path = os.path.join(out, '.lock')
    try:
        f = open(path, 'a')
    except OSError as e:
        raise CLIError(f'{out}: cannot open its lock file ({e})') from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CLIError(f'{out}: another training holds this folder '
                       f'({path}); wait for it or use a new --out '
                       'folder') from None
    except OSError as e:
        f.close()
        raise CLIError(f'{out}: cannot lock {path} ({e})') from None
    return f


def _check_out(args, config: TrainConfig) -> tuple:
    """Refuses to clobber a run in ``args.out``; for ``--resume`` checks the
    data flags and config against the saved run. Returns the saved spec
    (or None) and the moved path flags to check by content
    (:func:`_refuse_conflicts`)."""
    out = args.out
    if args.resume and args.overwrite:
        raise CLIError('--resume and --overwrite exclude each other')
    present = [n for n in RUN_MARKERS if os.path.exists(os.path.join(out, n))]
    if present and not (args.resume or args.overwrite):
        raise CLIError(f'{out} already holds a run ({", ".join(present)}); '
                       'pass --resume to continue it, --overwrite to replace '
                       'it, or a new --out folder')
    if not args.resume:
        return None, []
    run_file = os.path.join(out, RUN_FILE)
    saved = _read_run(run_file)
    moved: List[tuple] = []
    if saved is not None:
        moved = _refuse_conflicts(args, saved, run_file, _RESUME_HINT)
    last = os.path.join(out, 'last.pt')
    if os.path.isfile(last):
        state = load_checkpoint(last)
        was = {k: v for k, v in TrainConfig.from_checkpoint(
            state.get('config', {}), source=last).to_dict().items()
               if k != 'progress'}
        # Settings left to the graph's size (None) are compared, resolved,
        # by the trainer once the data is open.
        now = {k: v for k, v in config.to_dict().items()
               if k != 'progress' and not (v is None and k in SIZED)}
        was = {k: v for k, v in was.items() if k in now}
        if was != now:
            raise CLIError(f'cannot resume: {last} was trained with '
                           f'different settings '
                           f'({resume_conflicts(was, now)}); use the same '
                           'config or a new --out folder')
    return saved, moved


_RESUME_HINT = 'resuming on other data needs a new --out folder'


def _launcher_world() -> tuple:
    """``(rank, world_size)`` set by ``torchrun`` in the environment."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return int(os.environ.get('RANK', '0')), world


def _prepare_run(args, config: TrainConfig):
    """The work only one process does before training: the --out checks,
    the data spec, run.json. Returns ``(spec, data, lock)``."""
    out = args.out
    lock = saved = None
    moved: List[tuple] = []
    if out:
        os.makedirs(out, exist_ok=True)
        lock = _lock(out)
    try:
        if out:
            saved, moved = _check_out(args, config)
        spec = _data_spec(args, saved)
        with digest_memo():  # each file hashed once
            if saved is not None:  # --resume: the same files, by content
                checks = (spec, saved, moved, os.path.join(out, RUN_FILE),
                          _RESUME_HINT, 'resuming on changed data needs a '
                          'new --out folder')
                _check_files(*checks)
            data, digests = open_dataset(spec)
            if saved is not None:
                _check_files(*checks, digests=digests)
        from ricea_pyg.train import resolve_config
        resolve_config(data, config)  # a bad size-chosen setting: now
        if out:
            if args.overwrite:  # no stale checkpoint outlives its run.json
                for name in ('last.pt', 'best.pt', 'metrics.json',
                             'log.csv'):
                    path = os.path.join(out, name)
                    if os.path.isfile(path):
                        os.remove(path)
            # The data: the dataset's own fields and the SHA-256 of every
            # file it read, which identify it wherever it is moved.
            record = {'data': dict(spec, files=digests),
                      'config': config.to_dict()}
            atomic_write(os.path.join(out, RUN_FILE), lambda f: json.dump(
                record, f, indent=2), binary=False)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return spec, data, lock


def _fit(holder: List, config: TrainConfig, out: Optional[str],
         resume: bool, start: float, device=None) -> Dict:
    """Trains on the data in :obj:`holder` (a one-item list, emptied so
    that nothing keeps the dataset alive beside the trainer's copy)."""
    from ricea_pyg.train import Trainer
    trainer = Trainer(holder.pop(), config, out_dir=out, device=device)
    metrics = trainer.fit(resume=resume)
    trainer.write_metrics(metrics, time.perf_counter() - start)
    return metrics


def _device_of(local_rank: int):
    """This process's GPU (made current, as NCCL needs), or None."""
    if torch.cuda.is_available():
        device = torch.device('cuda', local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return None


def _train_worker(rank: int, world: int, init_method: str, spec: Dict,
                  config: TrainConfig, out: Optional[str], resume: bool,
                  threads: int, start: float, results) -> None:
    """One process of ``ricea train --nproc N``."""
    import torch.distributed as dist
    if threads:
        torch.set_num_threads(threads)
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    device = _device_of(rank)  # one machine: the rank is the local rank
    dist.init_process_group(backend, init_method=init_method, rank=rank,
                            world_size=world)
    try:
        metrics = _fit([open_dataset(spec)[0]], config, out, resume, start,
                       device)
        if rank == 0:
            results.put(metrics)
    finally:
        dist.destroy_process_group()


def _spawn_training(args, spec: Dict, config: TrainConfig, start: float
                    ) -> Dict:
    """Trains on ``args.nproc`` local processes (gloo on CPU, NCCL on
    GPUs); rank 0's metrics."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    if torch.cuda.is_available() and args.nproc > torch.cuda.device_count():
        raise CLIError(f'--nproc {args.nproc} exceeds the '
                       f'{torch.cuda.device_count()} GPUs (NCCL needs one '
                       'GPU per process); pass at most that many')
    ctx = mp.get_context('spawn')
    results = ctx.SimpleQueue()
    try:
        mp.spawn(_train_worker, nprocs=args.nproc, join=True, args=(
            args.nproc, f'tcp://127.0.0.1:{port}', spec, config, args.out,
            args.resume, args.threads or max(1, (os.cpu_count() or 1)
                                             // args.nproc), start, results))
    except mp.ProcessRaisedException as e:  # a worker's error, one line
        last = [line for line in str(e).strip().splitlines() if line][-1]
        raise CLIError(f'a training process failed: {last}') from None
    return results.get()


def cmd_train(args) -> Dict:
    start = time.perf_counter()
    config = _config(args)
    rank, world = _launcher_world()
    nproc = getattr(args, 'nproc', 1) or 1
    if nproc < 1:
        raise CLIError(f'--nproc must be at least 1 (got {nproc})')
    if world > 1 and nproc > 1:
        raise CLIError('--nproc starts its own processes; under torchrun '
                       'leave it out (torchrun --nproc_per_node sets it)')
    if args.threads:
        torch.set_num_threads(args.threads)
    lock = None
    try:
        if world > 1:  # torchrun: rank 0 checks and writes, all train
            import torch.distributed as dist
            _device_of(int(os.environ.get('LOCAL_RANK', rank)))
            dist.init_process_group('nccl' if torch.cuda.is_available()
                                    else 'gloo')
            shared: List[Any] = [None, None]
            data = failure = None
            if rank == 0:
                try:
                    shared[0], data, lock = _prepare_run(args, config)
                except BaseException as e:  # every rank must hear of it
                    shared[1], failure = str(e) or type(e).__name__, e
            dist.broadcast_object_list(shared, src=0)
            if shared[1] is not None:
                dist.destroy_process_group()
                if failure is not None and not isinstance(
                        failure, (CLIError, ConfigError, ValueError,
                                  OSError)):
                    raise failure
                raise CLIError(shared[1])
            holder = [data if data is not None else
                      open_dataset(shared[0])[0]]
            del data
            try:
                metrics = _fit(holder, config, args.out, args.resume, start,
                               _device_of(int(os.environ.get(
                                   'LOCAL_RANK', rank))))
            finally:
                dist.destroy_process_group()
            if rank != 0:
                return metrics
        else:
            prepared = list(_prepare_run(args, config))
            spec, lock = prepared[0], prepared[2]
            data = prepared.pop(1)
            del prepared
            if nproc > 1:
                del data  # each process opens it
                metrics = _spawn_training(args, spec, config, start)
            else:
                holder = [data]
                del data  # handed over, not held here: the trainer copies it
                metrics = _fit(holder, config, args.out, args.resume, start)
    finally:
        if lock is not None:
            lock.close()
    print(json.dumps({k: metrics[k] for k in ('val', 'test', 'wall_time_s')},
                     indent=2))
    return metrics


def _restore(args):
    """Model, data, inputs and config of a checkpoint."""
    from ricea_pyg.train import build_model, model_inputs, resolve_config
    from ricea_pyg.train.config import LABELS
    state = load_checkpoint(args.checkpoint)
    if 'model' not in state or 'config' not in state:
        raise CLIError(f'{args.checkpoint}: not a ricea checkpoint (no model '
                       'or config); pass DIR/best.pt or DIR/last.pt')
    run_file = os.path.join(os.path.dirname(os.path.abspath(
        args.checkpoint)), RUN_FILE)
    saved = _read_run(run_file)
    moved: List[tuple] = []
    verb = 'evaluating' if args.command == 'evaluate' else 'using the model'
    if saved is not None:
        if not args.other_data:
            moved = _refuse_conflicts(args, saved, run_file, f'{verb} on '
                                      'other data needs --other-data')
        else:
            args.overridden = {k: [was, value] for k, value, was in
                               _spec_conflicts(args, saved)}
            changes = ', '.join(f'{k} {was} -> {value}' for k, (was, value)
                                in args.overridden.items()) or 'none'
            print(f'ricea {args.command}: note: --other-data: not the '
                  f'checkpoint\'s data ({changes})', file=sys.stderr)
    spec = _data_spec(args, saved)
    check = saved is not None and not args.other_data
    what = 'evaluate' if args.command == 'evaluate' else 'use the model'
    checks = (spec, saved, moved, run_file, f'{verb} on other data needs '
              '--other-data', f'pass --other-data to {what} on the changed '
              'data anyway')
    with digest_memo():  # each file hashed once
        if check:  # the checkpoint's files, by content, before loading
            _check_files(*checks)
        data, digests = open_dataset(spec)
        if check:
            _check_files(*checks, digests=digests)
    config = TrainConfig.from_checkpoint(state['config'],
                                         source=args.checkpoint)
    if 'modalities' in state:  # the data's modalities it read; the labels
        # modality is derived, not read
        config = dataclasses.replace(config, modalities=[
            m for m in state['modalities'] if m != LABELS])
    # Seed labels from the pairs it last trained on (self-training adds
    # some); on other data, that data's own training pairs.
    inputs = model_inputs(data, config, None if args.other_data else
                          state.get('train_pairs'))
    config = resolve_config(inputs, config)  # the sizes it trained with
    model = build_model(inputs, config)
    if model.beside and 'label_weight' in state:  # as chosen on validation
        model.beside_weight = state['label_weight']
    if 'score_weights' in state:  # the name weight chosen on validation
        model.score_weights = state['score_weights']
    try:
        model.load_state_dict(state['model'])
    except RuntimeError as e:
        raise CLIError(f'{args.checkpoint}: does not fit this data ({e}); '
                       'pass the --root/--pair it was trained on') from None
    except ValueError as e:  # e.g. a model this version no longer builds
        raise CLIError(f'{args.checkpoint}: {e}') from None
    model.eval()
    return model, data, inputs, config


def cmd_evaluate(args) -> Dict:
    from ricea_pyg.metrics import evaluate_embeddings
    model, data, inputs, config = _restore(args)
    # The score it was trained with, and its evaluation protocol: on large
    # graphs approximate search on config.eval_queries sampled pairs.
    emb = model.embed(inputs, search_only=True).embeddings
    n_s = inputs.num_source
    pairs = data[ALIGN][f'{args.split}_index']
    csls = config.csls_k if args.csls_k is None else args.csls_k
    sample = dict(num_queries=config.eval_queries, seed=config.seed)
    result = {
        'split': args.split, 'candidates': args.candidates,
        'csls': evaluate_embeddings(emb[:n_s], emb[n_s:], pairs, csls,
                                    args.candidates, one_to_one=True,
                                    **sample),
        'cosine': evaluate_embeddings(emb[:n_s], emb[n_s:], pairs, 0,
                                      args.candidates, **sample)}
    if getattr(args, 'overridden', None) is not None:
        result['other_data'] = args.overridden
    print(json.dumps(result, indent=2))
    return result


def cmd_align(args) -> str:
    from ricea_pyg.data import unaligned_entities
    from ricea_pyg.explain import entity_uris
    from ricea_pyg.search import top1_both_directions
    model, data, inputs, config = _restore(args)
    # The score it was trained with.
    emb = model.embed(inputs, search_only=True).embeddings
    n_s = inputs.num_source
    s_ids, t_ids = unaligned_entities(data[ALIGN].train_index, n_s,
                                      inputs.num_target)
    csls = config.csls_k if args.csls_k is None else args.csls_k
    if args.threshold is not None and not args.one_to_one:
        raise CLIError('--threshold applies to --one-to-one only; add '
                       '--one-to-one or drop --threshold')
    s_uri, t_uri = entity_uris(data, 'source'), entity_uris(data, 'target')
    if args.one_to_one:
        rows, header = _one_to_one_rows(emb[:n_s], emb[n_s:], s_ids, t_ids,
                                        csls, args.threshold)
    else:
        # Exact below 50k entities, FAISS IVF above.
        # embed() gives unit-norm rows: normalize=False spares a copy.
        scores, top, back = top1_both_directions(emb[:n_s][s_ids],
                                                 emb[n_s:][t_ids], csls,
                                                 kind='auto',
                                                 nprobe=SCALE_NPROBE,
                                                 normalize=False)
        header = ['source', 'target', 'score', 'mutual']
        # j < 0: an approximate index found no target for this source.
        rows = [(int(i), int(t_ids[j]), float(scores[r, 0]),
                 int(int(back[j, 0]) == r))
                for r, (i, j) in enumerate(zip(s_ids.tolist(),
                                               top[:, 0].tolist())) if j >= 0]
        if len(rows) < len(s_ids):
            print(f'ricea align: note: no candidate found for '
                  f'{len(s_ids) - len(rows)} sources (approximate search); '
                  'they are not exported', file=sys.stderr)

    def write(f):
        w = csv.writer(f, delimiter='\t', lineterminator='\n')
        w.writerow(header)
        for i, j, score, last in rows:
            w.writerow([s_uri[i], t_uri[j], f'{score:.6f}', last])
    atomic_write(args.output, write, binary=False)
    kind = 'one-to-one' if args.one_to_one else 'predicted'
    print(f'wrote {len(rows)} {kind} pairs of {len(s_ids)} unaligned '
          f'sources (csls_k={csls}) to {args.output}')
    return args.output


def _one_to_one_rows(source, target, s_ids, t_ids, csls_k: int,
                     threshold: Optional[float]):
    """Rows ``(source, target, score, probability)`` of the global
    one-to-one assignment among the unaligned entities."""
    from ricea_pyg.search import one_to_one_assignment
    result = one_to_one_assignment(source, target, s_ids, t_ids,
                                   csls_k=csls_k, threshold=threshold,
                                   normalize=False, nprobe=SCALE_NPROBE)
    prob = result.probability
    rows = [(int(i), int(j), float(result.scores[k]),
             '' if prob is None else f'{float(prob[k]):.6f}')
            for k, (i, j) in enumerate(result.pairs.t().tolist())]
    return rows, ['source', 'target', 'score', 'probability']


def cmd_explain(args) -> str:
    from ricea_pyg.explain import explain_model
    model, data, inputs, config = _restore(args)
    try:
        csv_path = explain_model(model, data, inputs, args.out,
                                 config.csls_k)
    except ImportError as e:
        raise CLIError(str(e)) from None
    print(f'wrote {csv_path} and plots to {args.out}')
    return csv_path


# -- entry point --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='ricea', description=__doc__.split(
        '\n')[0])
    from ricea_pyg import __version__
    p.add_argument('--version', action='version',
                   version=f'%(prog)s {__version__}')
    sub = p.add_subparsers(dest='command', required=True)
    t = sub.add_parser('train', help='train, select on validation, test')
    _add_data_args(t, required=True)
    t.add_argument('--config', help='JSON or TOML file of training options')
    t.add_argument('--recipe', choices=sorted(RECIPES),
                   help='a named configuration (docs/pipeline.md); the '
                   'training flags override it')
    t.add_argument('--out', help='output folder (checkpoints, metrics)')
    t.add_argument('--resume', action='store_true',
                   help='continue from OUT/last.pt (data from OUT/'
                   'run.json; a conflicting data flag is refused)')
    t.add_argument('--overwrite', action='store_true',
                   help='replace the run already in OUT')
    t.add_argument('--threads', type=int, default=0)
    t.add_argument('--nproc', type=int, default=1,
                   help='train on N local processes with torch.distributed '
                   '(gloo on CPU, NCCL on GPUs); or launch with torchrun')
    _add_config_args(t)
    for name, helptext in (('evaluate', 'metrics of a checkpoint'),
                           ('align', 'export predicted pairs as TSV'),
                           ('explain', 'modality weights: CSV and plots')):
        c = sub.add_parser(name, help=helptext)
        c.add_argument('checkpoint')
        _add_data_args(c, required=False)
        c.add_argument('--other-data', action='store_true',
                       help='let data flags differ from the checkpoint\'s '
                       'run.json (use the model on other data)')
        if name in ('evaluate', 'align'):
            c.add_argument('--csls-k', type=int, default=None)
        if name == 'evaluate':
            c.add_argument('--split', choices=['val', 'test'],
                           default='test')
            c.add_argument('--candidates', choices=CANDIDATE_PROTOCOLS,
                           default='test')
        if name == 'align':
            c.add_argument('--output', required=True, help='TSV file')
            c.add_argument('--one-to-one', action='store_true',
                           help='export a global one-to-one assignment '
                           '(Hungarian, or Sinkhorn on large graphs) '
                           'instead of each source\'s best target')
            c.add_argument('--threshold', type=float, default=None,
                           help='with --one-to-one: leave sources whose '
                           'best score is below this unmatched')
        if name == 'explain':
            c.add_argument('--out', required=True, help='output folder')
    return p


COMMANDS = {'train': cmd_train, 'evaluate': cmd_evaluate,
            'align': cmd_align, 'explain': cmd_explain}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (CLIError, ConfigError, DataFormatError, OSError,
            ValueError) as e:  # OSError: missing files, a full disk, ...
        print(f'ricea {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
